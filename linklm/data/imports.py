"""Rows made elsewhere (a site survey, another tool's CSV) -> a dataset folder like a generated one.

An imported folder has what the data flow writes (Parquet chunks with SHA256s, a manifest,
then validation, export and shards), so training, evaluation, learning curves and sweeps
take it as they take a generated one. The contract of DATA_SPEC.md (columns, types,
ranges, categories, unique scenario_ids) is enforced row by row: a row that breaks it is
quarantined with its scenario_id and its problems (``import/quarantine.csv``), the rest are
kept. Agreement with the synthetic physics is reported, not enforced (measured links need
not follow the generator's model), unless the import asks for it (``physics_mode
"enforce"``). Importing the same file again gives the same manifest.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import polars as pl

from linklm import atomic
from linklm.data import dataset, rules, validate
from linklm.errors import DatasetError, SchemaError

IMPORTER = "linklm-import/1"
SUFFIXES = (".csv", ".parquet", *validate.JSON_LINES)
REPORT_DIR = "import"  # the source file's own validation: what was quarantined, and why
CHUNK_ROWS = 10_000


def check_source(source: Path) -> None:
    """A clear error before anything is written: the file is missing or of no known kind."""
    if not source.exists():
        raise SchemaError(f"{source}: file not found")
    if source.is_dir():
        raise SchemaError(
            f"{source}: a folder; import takes a file ({', '.join(SUFFIXES)}); a dataset "
            "folder can be used as it is (--data-dir)"
        )
    if source.suffix.lower() not in SUFFIXES:
        raise SchemaError(
            f"{source}: unknown kind of file {source.suffix!r}; import reads {', '.join(SUFFIXES)}"
        )


def identity(source: Path, physics_mode: rules.PhysicsMode, chunk_rows: int) -> dict:
    """What generation.json holds for an imported folder: a folder holds one import of one
    file; another file, or the same one imported another way, needs --overwrite."""
    return {
        "generator": IMPORTER,
        "source_sha256": atomic.sha256_file(source),
        "physics_mode": physics_mode,
        "chunk_rows": chunk_rows,
    }


def _write_chunks(out_dir: Path, rows: pl.DataFrame, chunk_rows: int) -> list[dataset.ChunkRecord]:
    """The kept rows as chunk files (each written whole, then renamed), and their records;
    chunk files left from a longer import of the same folder are removed."""
    chunk_dir = out_dir / dataset.CHUNK_DIR
    chunk_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for index, start in enumerate(range(0, rows.height, chunk_rows)):
        part = rows.slice(start, chunk_rows)
        path = out_dir / dataset.chunk_file(index)
        with atomic.atomic_path(path) as tmp:
            dataset.write_chunk(part.to_arrow(), tmp)
        records.append(
            dataset.ChunkRecord(
                index=index,
                file=dataset.chunk_file(index),
                first_id=int(part["scenario_id"][0]),
                rows=part.height,
                bytes=path.stat().st_size,
                sha256=atomic.sha256_file(path),
            )
        )
        atomic.write_json(path.with_suffix(".json"), asdict(records[-1]))
    wanted = {Path(r.file).name for r in records} | {Path(r.file).stem + ".json" for r in records}
    for stale in chunk_dir.glob("chunk-*"):
        if stale.name not in wanted:
            stale.unlink()
    return records


def import_file(
    source: str | Path,
    out_dir: str | Path,
    physics_mode: rules.PhysicsMode = "report",
    max_error_rate: float = 1.0,
    chunk_rows: int = CHUNK_ROWS,
    overwrite: bool = False,
) -> dict:
    """Import ``source`` (CSV in the seed's format or another tool's dialect, Parquet in
    the working schema, JSON Lines) into ``out_dir``; returns the manifest.

    Raises SchemaError for a file that is not rows of the contract at all (missing
    columns, not text), ValidationFailed when more than ``max_error_rate`` of its rows
    break the contract, DatasetError when no row is left or the folder holds another
    dataset."""
    source, out_dir = Path(source), Path(out_dir)
    check_source(source)
    folder_lock = dataset.lock(out_dir)
    try:
        ident = identity(source, physics_mode, chunk_rows)  # the file hashed once
        dataset.prepare(out_dir, ident, overwrite)
        (out_dir / dataset.MANIFEST).unlink(missing_ok=True)  # the folder is being rewritten
        result = validate.validate_path(source, out_dir / REPORT_DIR, physics_mode, keep=True)
        summary = result.summary()
        validate.enforce(summary, max_error_rate)
        if result.kept is None or result.kept.height == 0:
            raise DatasetError(
                f"{source}: none of its {result.rows} rows passes the contract, so there is "
                f"nothing to import; the problems are in {result.files['problems_csv']}"
            )
        records = _write_chunks(out_dir, result.kept, chunk_rows)
        imported = {
            "importer": IMPORTER,
            "file": source.name,
            "source_sha256": ident["source_sha256"],
            "physics_mode": physics_mode,
            "rows_read": result.rows,
            "rows_kept": result.kept.height,
            "rows_quarantined": result.bad_rows,
            "physics": summary["physics"],
            "report": f"{REPORT_DIR}/report.md",
            "quarantine": f"{REPORT_DIR}/quarantine.csv",
        }
        return dataset.write_manifest(out_dir, None, records, imported)
    finally:
        folder_lock.release()
