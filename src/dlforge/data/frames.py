"""A run's data as a table: read the file a config names, and the row and column helpers every
layer above needs (labels encoded, rows taken, inputs given as lists, arrays or Series).

``read_data`` is the one reader of a config's data: a table (CSV, TSV, JSONL, Parquet) holding
the input and output columns, or for an image or audio input a folder of class sub-folders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlforge.config import RunConfig
from dlforge.data.features import LabelEncoder, NumericTarget, fit_target, load_target
from dlforge.data.io import read_table, require_columns
from dlforge.errors import DataError

__all__ = ["FLAGS", "Target", "as_list", "audio_folder_frame", "encode_labels",
           "image_folder_frame", "image_list", "label_array", "output_kind", "read_data",
           "sequence_list", "take", "take_columns", "task_name"]

Target = LabelEncoder | NumericTarget

FLAGS = {"text": "--text", "image": "--image", "numeric": "--numeric", "sequence": "--sequence",
         "category": "--category", "audio": "--audio"}


def read_data(cfg: RunConfig, path: str | Path | None = None, *, labelled: bool = True,
              renames: dict[str, str] | None = None) -> pd.DataFrame:
    """The frame a config trains on: a table (CSV, TSV, JSONL, Parquet) holding the input and
    output columns, or for an image or audio input a folder of class sub-folders. Image and
    audio paths in a table are relative to the table's folder. ``renames`` maps a file's
    column names to the config's (a file whose text column is called differently)."""
    path = Path(path if path is not None else cfg.data.path)  # type: ignore[arg-type]
    if cfg.forecast is not None:
        df = read_table(path, cfg.data.format if path == Path(str(cfg.data.path)) else "auto")
        fc = cfg.forecast
        cols = {c: "--forecast" for c in fc.targets if labelled}
        cols.update({c: "--covariates" for c in fc.covariates})
        cols.update({c: "--exogenous" for c in fc.exogenous})
        if fc.time:
            cols[fc.time] = "--time"
        require_columns(df, cols, str(path))
        return df
    images = [i for i in cfg.inputs if i.type == "image"]
    clips = [i for i in cfg.inputs if i.type == "audio"]
    if clips:  # audio files: say up front if the reader (the audio extra) is missing
        from dlforge.data.audio import require_reader

        require_reader()
    if clips and path.is_dir():
        if not labelled:
            from dlforge.data.audio import audio_files

            return pd.DataFrame({clips[0].name: pd.Series(audio_files(path), dtype=object)})
        return audio_folder_frame(path, cfg)
    if images and path.is_dir():
        if not labelled:
            return pd.DataFrame({images[0].name: pd.Series(image_list(path), dtype=object)})
        return image_folder_frame(path, cfg)
    df = read_table(path, cfg.data.format if path == Path(str(cfg.data.path)) else "auto")
    renames = renames or {}
    back = {v: k for k, v in renames.items()}
    cols = {back.get(i.name, i.name): FLAGS[i.type] for i in cfg.inputs}
    if labelled:
        cols[back.get(cfg.output.name, cfg.output.name)] = "--label"
    require_columns(df, cols, str(path))
    df = df.rename(columns=renames)
    for inp in images + clips:
        df[inp.name] = [str(path.parent / v) if isinstance(v, str) and not Path(v).is_absolute()
                        else v for v in df[inp.name]]
    return df


def output_kind(cfg: RunConfig, df: pd.DataFrame, source: str) -> str:
    """forecast, numeric, or the classification kind the output column will get."""
    if cfg.forecast is not None:
        return "forecast"
    if cfg.output.type != "auto":
        return cfg.output.type
    if df[cfg.output.name].isna().all():
        return "category"  # cleaning reports the missing labels
    return fit_target(df[cfg.output.name].dropna().tolist(), "auto", cfg.output.separator,
                      source=f"{source}: {cfg.output.name}").kind



def image_folder_frame(root: str | os.PathLike[str], cfg: RunConfig) -> pd.DataFrame:
    """A folder of class sub-folders as a frame: the image column holds each image's array
    (loaded once here), the output column its class folder's name."""
    from dlforge.data.images import load_image_folder  # PIL only when images are read

    inp = cfg.inputs[0]
    size = tuple(inp.size) if inp.size else None
    images, labels, _ = load_image_folder(Path(root), size=size, channels=inp.color)
    return pd.DataFrame({inp.name: pd.Series(list(images), dtype=object),
                         cfg.output.name: labels})


def audio_folder_frame(root: str | os.PathLike[str], cfg: RunConfig) -> pd.DataFrame:
    """A folder of class sub-folders of audio clips as a frame: the audio column holds each
    clip's path (read when the input is loaded), the output column its class folder's name."""
    from dlforge.data.audio import audio_folder

    inp = next(i for i in cfg.inputs if i.type == "audio")
    paths, labels = audio_folder(Path(root))
    return pd.DataFrame({inp.name: pd.Series(paths, dtype=object), cfg.output.name: labels})


def image_list(X: Any) -> list[Any]:
    """Images as a list: rows of an array, paths, arrays, or the image files of a folder."""
    if isinstance(X, str | os.PathLike):
        from dlforge.data.images import IMAGE_EXTENSIONS  # PIL only when images are read

        p = Path(X)
        if not p.is_dir():
            raise DataError(f"{p}: expected a folder of images, an array or a list of images")
        files = sorted(f for f in p.iterdir()
                       if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{p}: no image files in the folder")
        return [str(f) for f in files]
    if isinstance(X, np.ndarray):
        if X.ndim not in (3, 4):
            raise DataError(f"X: expected an image array of shape (N, H, W) or (N, H, W, C), "
                            f"got shape {X.shape}")
        return list(X)
    if isinstance(X, pd.Series):
        return X.tolist()
    try:
        return list(X)
    except TypeError:
        raise DataError(f"X: expected images (a folder, array or list), got "
                        f"{type(X).__name__}") from None


def sequence_list(X: Any) -> list[Any]:
    if isinstance(X, np.ndarray):
        if X.ndim not in (2, 3):
            raise DataError(f"X: expected sequences: an array (N, T) or (N, T, F), or a list, "
                            f"got shape {X.shape}")
        return list(X)
    return as_list(X, "X")



def encode_labels(df: pd.DataFrame, cfg: RunConfig, source: str, saved: Path | None = None
                  ) -> tuple[Target, np.ndarray, np.ndarray]:
    """Fit the label map or target scaler on ``df`` (or load a ``saved`` one) and encode the
    output column. Returns (target, targets, strata), strata being what splits stratify on
    (the class; all zeros for a numeric output, which splits at random)."""
    col = cfg.output.name
    target = (load_target(saved) if saved is not None else
              fit_target(df[col].tolist(), cfg.output.type, cfg.output.separator,
                         source=f"{source}: {col}"))
    y = target.encode(df[col].tolist(), cfg.output.separator, source=source)
    if target.kind == "numeric":
        strata = np.zeros(len(y), dtype=np.int64)
    else:
        strata = y.argmax(axis=1) if target.kind == "multilabel" else y
    return target, y, strata


def take(column: Any, rows: np.ndarray) -> Any:
    """Rows of a loaded or encoded column (a NumPy array or a list)."""
    if isinstance(column, np.ndarray):
        return column[rows]
    return [column[i] for i in rows]


def take_columns(columns: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    return {name: take(col, rows) for name, col in columns.items()}


def as_list(values: Any, name: str) -> list[Any]:
    if isinstance(values, str):
        raise DataError(f"{name}: expected a sequence of values, got a single string")
    if isinstance(values, pd.DataFrame):
        if values.shape[1] != 1:
            raise DataError(f"{name}: expected one column, got a DataFrame with "
                            f"{values.shape[1]} columns")
        values = values.iloc[:, 0]
    if isinstance(values, pd.Series):
        return values.tolist()
    if not isinstance(values, list | tuple) and hasattr(values, "__array__"):
        values = np.asarray(values)  # anything array-like: a torch tensor, a pyarrow array
    if isinstance(values, np.ndarray):
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        return list(values) if values.ndim != 1 else values.tolist()
    try:
        return list(values)
    except TypeError:
        raise DataError(f"{name}: expected a list, NumPy array or pandas Series, got "
                        f"{type(values).__name__}") from None


def label_array(values: list[Any]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
        return arr.astype(np.int64)
    return arr

def task_name(cfg: RunConfig, kind: str) -> str:
    """text_classification, image_classification, tabular_regression, multimodal_...,
    forecasting."""
    if cfg.forecast is not None:
        return "forecasting"
    kinds = {i.type for i in cfg.inputs}
    rich = kinds - {"numeric", "category"}
    what = ("tabular" if not rich else
            (next(iter(rich)) if kinds == rich else "multimodal"))
    return f"{what}_{'regression' if kind == 'numeric' else 'classification'}"

