"""Cleaning: text steps and row drops. Each step is counted, so a user sees what it did to
their data."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from dlforge.config import CleanConfig
from dlforge.data.pii import PLACEHOLDERS, scrub
from dlforge.errors import DataError

__all__ = ["clean_frame", "clean_text", "is_missing"]

_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_SPACE = re.compile(r"\s+")


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return value is pd.NA or value is pd.NaT


def _steps(cfg: CleanConfig) -> list[tuple[str, Callable[[str], str]]]:
    """The configured per-text steps, in order, each with the report key that counts it."""
    steps: list[tuple[str, Callable[[str], str]]] = []
    if cfg.html:
        steps.append(("html_cleaned", lambda s: _TAG.sub(" ", html.unescape(s))))
    if cfg.unicode_nfkc:
        steps.append(("unicode_normalised", lambda s: unicodedata.normalize("NFKC", s)))
    if cfg.whitespace:
        steps.append(("whitespace_fixed", lambda s: _SPACE.sub(" ", s).strip()))
    return steps


def clean_text(text: Any, cfg: CleanConfig) -> str:
    """Apply the configured per-text steps (and PII scrubbing); as training and predicting."""
    s = "" if is_missing(text) else str(text)
    for _, step in _steps(cfg):
        s = step(s)
    return scrub(s, cfg.pii_region.upper())[0] if cfg.pii else s


def clean_frame(
    df: pd.DataFrame,
    text_cols: str | list[str],
    label_col: str | None,
    cfg: CleanConfig,
    source: str = "data",
    key_cols: list[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Clean the text columns and drop unusable rows; returns the frame and step -> count.

    Duplicates are rows equal in ``key_cols`` (default: the text columns) and the label.
    With ``label_col`` None (predicting), no row is dropped: every input row gets a prediction.
    """
    text_cols = [text_cols] if isinstance(text_cols, str) else list(text_cols)
    key_cols = text_cols if key_cols is None else key_cols
    report: dict[str, int] = {"rows_in": len(df)}
    out = df.copy()
    for key, _ in _steps(cfg):
        report[key] = 0
    if cfg.pii:
        report["pii_rows"] = 0
        for kind in PLACEHOLDERS:
            report[f"pii_{kind}"] = 0
    for col in text_cols:
        texts = out[col].map(lambda v: "" if is_missing(v) else str(v))
        for key, step in _steps(cfg):
            new = texts.map(step)
            report[key] += int((new != texts).sum())
            texts = new
        if cfg.pii:  # after the steps above, so a number split by tags or odd spaces is found
            texts = _scrub_column(texts, cfg.pii_region.upper(), report)
        out[col] = texts
    if label_col is None:
        return out.reset_index(drop=True), report

    keep = pd.Series(True, index=out.index)
    if cfg.drop_empty and text_cols:
        empty = pd.concat([out[c].str.len() == 0 for c in text_cols], axis=1).any(axis=1)
        report["empty_dropped"] = int(empty.sum())
        keep &= ~empty
    missing = out[label_col].map(is_missing)
    if bool(missing.all()):
        raise DataError(f"{source}: column {label_col!r} has no labels: all {len(out)} values "
                        "are missing (NaN or empty)")
    if cfg.drop_missing_label:
        report["missing_label_dropped"] = int((missing & keep).sum())
        keep &= ~missing
    elif bool(missing.any()):
        first = int(np.flatnonzero(missing.to_numpy())[0])
        raise DataError(f"{source}: row {first + 1}: missing label in column {label_col!r} "
                        "(set data.clean.drop_missing_label: true to drop such rows)")
    out = out[keep]
    if cfg.drop_duplicates and key_cols:
        cols = {f"c{i}": out[c].map(_row_key) for i, c in enumerate(key_cols)}
        cols["label"] = out[label_col].map(_row_key)
        dup = pd.DataFrame(cols).duplicated()
        report["duplicates_dropped"] = int(dup.sum())
        out = out[~dup.to_numpy()]
    report["rows_out"] = len(out)
    if len(out) == 0:
        raise DataError(f"{source}: no rows left after cleaning ({_describe(report)})")
    return out.reset_index(drop=True), report


def _scrub_column(texts: pd.Series, region: str, report: dict[str, int]) -> pd.Series:
    """PII replaced in each text; counts added to ``report`` (never the values)."""
    out = []
    for text in texts:
        new, counts = scrub(text, region)
        if counts:
            report["pii_rows"] += 1
            for kind, n in counts.items():
                report[f"pii_{kind}"] += n
        out.append(new)
    return pd.Series(out, index=texts.index, dtype=object)


def _is_listlike(v: Any) -> bool:
    return isinstance(v, list | tuple | np.ndarray)


def _row_key(v: Any) -> Any:
    """A hashable stand-in for a cell: arrays (images, sequences) by their bytes, since their
    repr elides the middle of long arrays; lists by their full repr."""
    if isinstance(v, np.ndarray):
        return (v.dtype.str, v.shape, v.tobytes())
    if _is_listlike(v):
        return repr(list(v))
    return repr(v)


def _describe(report: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in report.items())
