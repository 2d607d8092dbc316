"""Serving a forecasting run: each instance is a series (column name → list of values, oldest
first), each prediction the ``horizon`` steps after it.

An instance carries every column the run reads — its targets, covariates and exogenous columns
— as equal-length lists of at least ``window`` numbers; with exogenous columns the last
``horizon`` entries are the future (their exogenous values are given; the targets' and
covariates' entries there may be null), exactly as :meth:`Forecaster.predict` reads a table. The
run's time column is optional: with it, the forecast carries the times of its steps. Every
value is checked (HTTP 422 naming ``instances[i].column[j]``) before the batch is formed, and
concurrent requests are forecast in one model pass (``Forecaster.predict_frames``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import HTTPException

from dlforge.data.series import check_time_column
from dlforge.errors import DlforgeError
from dlforge.estimators.load import load
from dlforge.serve import check_backend

__all__ = ["ServedForecaster"]


@dataclass
class _Series:
    """One checked instance: its table and what ``Forecaster.check_frame`` made of it (the
    standardised window and exogenous future), so predicting does not check it again."""

    frame: pd.DataFrame
    ready: tuple[np.ndarray, np.ndarray | None]


class ServedForecaster:
    """A forecasting run, loaded for serving (same interface as ``ServedModel``)."""

    def __init__(self, run_dir: str | Path, name: str | None = None, backend: str = "torch"):
        self.path = Path(run_dir)
        self.name = name or self.path.resolve().name
        self.backend = check_backend(backend)
        self.clf = load(self.path)
        self.session = None
        if backend == "onnx":
            from dlforge.serve.export import onnx_session

            self.session = onnx_session(self.path)
        fc = self.clf.config_.forecast
        assert fc is not None
        self.fc = fc
        self.roles = {**{c: "target" for c in fc.targets},
                      **{c: "covariate" for c in fc.covariates},
                      **{c: "exogenous" for c in fc.exogenous}}
        self.inputs = [(c, "series") for c in self.roles]  # required, in the run's order
        self.sensitive: list[str] = []
        self.optional = [fc.time] if fc.time else []
        self.min_rows = fc.window + (fc.horizon if fc.exogenous else 0)

    # -------------------------------------------------------------- checks
    def check(self, instances: list[Any], where: str = "instances") -> list[_Series]:
        """Each instance as a checked series, or HTTP 422 naming the bad field."""
        rows = []
        fields = [*self.roles, *self.optional]
        h = self.fc.horizon if self.fc.exogenous else 0
        for i, inst in enumerate(instances):
            at = f"{where}[{i}]"
            if not isinstance(inst, dict):
                raise HTTPException(422, f"{at}: expected an object with the series "
                                         f"{', '.join(fields)} (lists of values, oldest first)")
            missing = [c for c in self.roles if c not in inst]
            if missing:
                raise HTTPException(422, f"{at}.{missing[0]}: missing ({self.roles[missing[0]]}"
                                         " series: a list of numbers, oldest first)")
            extra = sorted(set(inst) - set(fields))
            if extra:
                raise HTTPException(422, f"{at}.{extra[0]}: unknown field; the fields are "
                                         f"{', '.join(fields)}")
            n = None
            row: dict[str, Any] = {}
            for col in [c for c in fields if c in inst]:
                values = inst[col]
                if not isinstance(values, list):
                    raise HTTPException(422, f"{at}.{col}: expected a list of values, oldest "
                                             f"first, got {type(values).__name__}")
                if n is None:
                    n = len(values)
                    if n < self.min_rows:
                        need = (f"the window ({self.fc.window}) plus {h} future steps of the "
                                "exogenous columns" if h else f"the window ({self.fc.window})")
                        raise HTTPException(422, f"{at}.{col}: {n} values; a forecast needs at "
                                                 f"least {self.min_rows}: {need}")
                elif len(values) != n:
                    raise HTTPException(422, f"{at}.{col}: {len(values)} values, but "
                                             f"{fields[0]} has {n}; every series of an "
                                             "instance must have the same length")
                if col in self.roles:
                    # The targets' and covariates' future entries (exogenous runs) may be null.
                    open_tail = h if self.roles[col] != "exogenous" else 0
                    row[col] = [_number(v, f"{at}.{col}[{j}]", j >= n - open_tail)
                                for j, v in enumerate(values)]
                else:
                    row[col] = [_time(v, f"{at}.{col}[{j}]") for j, v in enumerate(values)]
            frame = pd.DataFrame(row)
            try:
                if self.fc.time in row:
                    check_time_column(frame, self.fc.time, at)
                rows.append(_Series(frame, self.clf.check_frame(frame, at)))
            except DlforgeError as err:
                raise HTTPException(422, str(err)) from None
        return rows

    # -------------------------------------------------------------- predict
    def predict(self, rows: list[_Series]) -> list[dict[str, Any]]:
        out = []
        for table in self.clf.predict_frames(
                [r.frame for r in rows], ready=[r.ready for r in rows],
                outputs=self._onnx_outputs if self.session is not None else None):
            forecast = {}
            for col in table.columns:
                values = table[col].tolist()
                if col == "step":
                    forecast[col] = [int(v) for v in values]
                elif col in self.roles:
                    forecast[col] = [float(v) for v in values]
                else:  # the time column: numbers stay numbers, times become ISO strings
                    forecast[col] = [_iso(v) for v in values]
            out.append({"forecast": forecast})
        return out

    def _onnx_outputs(self, w: dict[str, np.ndarray]) -> np.ndarray:
        """The model pass through onnxruntime (see serve/export.py for the graph's inputs)."""
        x = w["x"]
        feeds = {"window": x, "window_mask": np.ones(x.shape[:2], dtype=bool)}
        if "future" in w:
            feeds["future"] = w["future"]
        return self.session.run(["logits"], feeds)[0]

    def infer_outputs(self, preds: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        """Open Inference Protocol v2 outputs: one [N, horizon] tensor per target (and the
        steps' times when the requests carried them)."""
        h = self.fc.horizon
        out = [{"name": t, "datatype": "FP32", "shape": [n, h],
                "data": [v for p in preds for v in p["forecast"][t]]} for t in self.fc.targets]
        if preds and self.fc.time and self.fc.time in preds[0]["forecast"]:
            out.insert(0, {"name": self.fc.time, "datatype": "BYTES", "shape": [n, h],
                           "data": [str(v) for p in preds for v in p["forecast"][self.fc.time]]})
        return out

    def metadata(self) -> dict[str, Any]:
        fc = self.fc
        inputs = [{"name": c, "datatype": "FP32", "shape": [-1, -1], "kind": "series",
                   "role": role} for c, role in self.roles.items()]
        if fc.time:
            inputs.append({"name": fc.time, "datatype": "BYTES", "shape": [-1, -1],
                           "kind": "time", "optional": True})
        return {"name": self.name, "versions": ["1"], "platform": "dlforge",
                "inputs": inputs,
                "outputs": [{"name": t, "datatype": "FP32", "shape": [-1, fc.horizon]}
                            for t in fc.targets],
                "parameters": {"task": "forecast", "model": self.clf.config_.model.name,
                               "window": fc.window, "horizon": fc.horizon,
                               "min_length": self.min_rows, "targets": list(fc.targets),
                               "covariates": list(fc.covariates),
                               "exogenous": list(fc.exogenous), "time": fc.time}}


def _iso(v: Any) -> Any:
    """A forecast step's time: ISO 8601 (the date alone at midnight), or the number."""
    if isinstance(v, pd.Timestamp):
        return v.date().isoformat() if v == v.normalize() else v.isoformat()
    return v.item() if isinstance(v, np.generic) else v


def _number(v: Any, where: str, may_be_null: bool) -> float | None:
    if v is None and may_be_null:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
        also = " (or null: a future step)" if may_be_null else ""
        raise HTTPException(422, f"{where}: expected a finite number{also}, got {v!r}")
    return float(v)


def _time(v: Any, where: str) -> Any:
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise HTTPException(422, f"{where}: expected a time (a date string or a number), "
                                 f"got {v!r}")
    return v
