"""Read tables (CSV, TSV, JSONL, Parquet) with errors that name the file and line; write
them atomically."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd

from dlforge._atomic import atomic_file
from dlforge.errors import DataError

__all__ = ["FORMATS", "detect_format", "read_table", "require_columns", "write_table"]

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise DataError(
            f"{path}: unreadable format {path.suffix or '(no extension)'!r}; expected a .csv, "
            ".tsv, .jsonl or .parquet file (or set data.format)"
        )
    return found


def read_table(path: str | Path, fmt: str = "auto") -> pd.DataFrame:
    """Read a data file into a DataFrame; every failure is a one-line DataError."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a folder; expected a .csv, .tsv, .jsonl or .parquet file")
    kind = detect_format(p, fmt)
    if kind == "parquet":
        try:
            df = pd.read_parquet(p)
        except Exception as err:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{p}: not a readable Parquet file ({_first_line(err)})") from None
    else:
        text = _read_utf8(p)
        if not text.strip():
            raise DataError(f"{p}: the file is empty")
        df = _read_jsonl(p, text) if kind == "jsonl" else _read_delimited(p, text, kind)
    if len(df) == 0:
        raise DataError(f"{p}: the file has a header but no rows")
    return df


def require_columns(df: pd.DataFrame, columns: dict[str, str], source: str) -> None:
    """``columns`` maps a column name to the flag that names it (for the hint)."""
    for col, flag in columns.items():
        if col not in df.columns:
            have = ", ".join(map(str, df.columns))
            raise DataError(
                f"{source}: column {col!r} not found; columns are: {have}. "
                f"Use {flag} to name the right column."
            )


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _read_utf8(p: Path) -> str:
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{p}: line {line}: bytes that are not UTF-8 ({raw[err.start:err.start + 1]!r} at "
            f"byte {err.start}); save the file as UTF-8"
        ) from None


_PANDAS_LINE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _read_delimited(p: Path, text: str, kind: str) -> pd.DataFrame:
    sep = "\t" if kind == "tsv" else ","
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, engine="c")
    except pd.errors.ParserError as err:
        m = _PANDAS_LINE.search(str(err))
        if m:
            expected, line, saw = m.groups()
            raise DataError(
                f"{p}: line {line}: expected {expected} fields, saw {saw} (a ragged row; "
                "quote fields that contain the delimiter)"
            ) from None
        raise DataError(f"{p}: not a readable {kind.upper()} file ({_first_line(err)})") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{p}: the file is empty") from None


def _read_jsonl(p: Path, text: str) -> pd.DataFrame:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{p}: line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{p}: line {number}: expected a JSON object per line, got "
                            f"{type(row).__name__}")
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(df: pd.DataFrame, out: Path) -> None:
    """Write CSV/TSV/JSONL/Parquet by extension, to a temp file renamed into place."""
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".parquet"):
        raise DataError(f"{out}: unsupported output format {suffix or '(none)'!r}; use .csv, "
                        ".tsv, .jsonl or .parquet")
    with atomic_file(out) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif suffix == ".tsv":
            df.to_csv(tmp, sep="\t", index=False)
        elif suffix == ".jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            df.to_parquet(tmp, index=False)
