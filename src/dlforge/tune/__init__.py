"""Hyperparameter tuning: an Optuna study over the config's ``tune:`` search space.

``dlforge tune run.yaml --trials N`` / ``dlforge.tune(config, out, trials=N)``. See
:mod:`dlforge.tune.study`.
"""

from dlforge.tune.study import TuneResult, sample_config, tune

__all__ = ["TuneResult", "sample_config", "tune"]
