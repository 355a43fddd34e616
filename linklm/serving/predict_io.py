"""Writing answers: CSV, JSON lines or Parquet by the output's suffix, atomically."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import fsspec
import polars as pl

from linklm import atomic
from linklm.errors import SchemaError, first_line


def local_path(location: str) -> Path | None:
    """The local file a path or ``file://`` URL names; None for another fsspec URL."""
    if "://" in location and not location.startswith("file://"):
        return None
    return Path(location.removeprefix("file://"))


def check_protocol(url: str) -> None:
    """An fsspec URL whose filesystem package is missing (s3fs for s3://...), named."""
    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as exc:
        raise SchemaError(f"{url}: cannot open {protocol}:// ({first_line(exc)})") from None


def is_same_file(output: str, source: str) -> bool:
    """True when writing ``output`` would replace ``source``: the same path or URL, or a
    link to it (a hard link, a symbolic link, a path spelt another way)."""
    if "-" in (output, source):
        return False
    out, src = local_path(output), local_path(source)
    if out is None or src is None:
        return output.rstrip("/") == source.rstrip("/")
    if out.exists() and src.exists():
        return os.path.samefile(out, src)
    return out.resolve() == src.resolve()


def check_output(output: str, source: str | None = None) -> None:
    """Before any answer is computed: an output that could not be written (a folder, a
    URL whose filesystem package is missing), or that is the input ``source`` itself (the
    answers would replace the links they answer)."""
    if output == "-":
        return
    if source is not None and is_same_file(output, source):
        raise SchemaError(
            f"{output}: this is the input ({source}); the answers would replace the links "
            "they answer, so give --output another file"
        )
    path = local_path(output)
    if path is None:
        check_protocol(output)
    elif path.is_dir():
        raise SchemaError(f"{output}: a folder; --output takes a file (.csv, .jsonl or .parquet)")
    else:
        nearest = next(p for p in path.absolute().parents if p.exists())  # '/' at the latest
        if not nearest.is_dir():
            raise SchemaError(f"{output}: {nearest} is a file, so no folder can be made under it")
        atomic.check_writable(path.parent)  # a read-only folder: named now, not after answering


def _bytes(frame: pl.DataFrame, suffix: str) -> bytes:
    buffer = io.BytesIO()
    if suffix == ".parquet":
        frame.write_parquet(buffer)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        frame.write_ndjson(buffer)
    else:
        frame.write_csv(buffer)
    return buffer.getvalue()


def write_answers(frame: pl.DataFrame, output: str, source: str | None = None) -> str:
    """Write to a local path (temp + rename), an fsspec URL, or '-' (stdout as CSV); never
    over ``source``, the input the answers came from."""
    check_output(output, source)
    if output == "-":
        sys.stdout.write(frame.write_csv())
        return output
    suffix = Path(output.split("?")[0]).suffix.lower()
    data = _bytes(frame, suffix)
    path = local_path(output)
    if path is None:
        with fsspec.open(output, "wb") as fh:  # object stores write whole objects anyway
            fh.write(data)
        return output
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_open(path, "wb") as fh:
        fh.write(data)
    return str(path)


SKIPPED_SUFFIX = ".skipped.csv"


def skipped_path(output: str) -> str | None:
    """Where the skipped rows of ``output`` are listed: beside it, ``answers.skipped.csv``
    for ``answers.csv`` (None for stdout)."""
    if output == "-":
        return None
    base, _, query = output.partition("?")
    stem = base[: -len(Path(base).suffix)] if Path(base).suffix else base
    return stem + SKIPPED_SUFFIX + (f"?{query}" if query else "")


def write_skipped(problems: pl.DataFrame, output: str) -> str | None:
    """Every skipped row with its reasons (row, scenario_id, column, check, message) in a
    CSV beside ``output``: the summary names a few ids, this file all of them. With none
    skipped, a list left there by an earlier run is removed, so it never describes other
    answers. Returns the file written, or None."""
    path = skipped_path(output)
    if path is None:
        return None
    local = local_path(path)
    if problems.height == 0:
        if local is not None:
            local.unlink(missing_ok=True)
        return None
    data = problems.select("row", "scenario_id", "column", "check", "message").write_csv()
    if local is None:
        with fsspec.open(path, "w") as fh:
            fh.write(data)
        return path
    atomic.write_text(local, data)
    return str(local)
