"""Hyperparameter tuning: an Optuna study over the config's ``tune:`` search space.

``dlforge tune run.yaml --trials N`` / ``dlforge.tune(config, out, trials=N)`` (the front door
in :mod:`dlforge.estimators.steps`, which hands :func:`run_study` how a trial trains). See
:mod:`dlforge.tune.study`.
"""

from dlforge.tune.space import sample_config
from dlforge.tune.study import HEARTBEAT_S, FitTrial, TrainRun, TuneResult, run_study

__all__ = ["HEARTBEAT_S", "FitTrial", "TrainRun", "TuneResult", "run_study", "sample_config"]
