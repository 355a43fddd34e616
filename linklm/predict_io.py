"""Writing answers: CSV, JSON lines or Parquet by the output's suffix, atomically."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import fsspec
import polars as pl

from linklm import atomic


def _bytes(frame: pl.DataFrame, suffix: str) -> bytes:
    buffer = io.BytesIO()
    if suffix == ".parquet":
        frame.write_parquet(buffer)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        frame.write_ndjson(buffer)
    else:
        frame.write_csv(buffer)
    return buffer.getvalue()


def write_answers(frame: pl.DataFrame, output: str) -> str:
    """Write to a local path (temp + rename), an fsspec URL, or '-' (stdout as CSV)."""
    if output == "-":
        sys.stdout.write(frame.write_csv())
        return output
    suffix = Path(output.split("?")[0]).suffix.lower()
    data = _bytes(frame, suffix)
    if "://" in output and not output.startswith("file://"):
        with fsspec.open(output, "wb") as fh:  # object stores write whole objects anyway
            fh.write(data)
        return output
    path = Path(output.removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_open(path, "wb") as fh:
        fh.write(data)
    return str(path)
