"""A dataset folder: Parquet chunks, their SHA256 records, the manifest, verify and resume.

Layout of ``out_dir``::

    generation.json            the generation config this folder is being built with
    chunks/chunk-00000.parquet one chunk of rows
    chunks/chunk-00000.json    its record (rows, bytes, sha256), written after the chunk
    manifest.json              written last: every chunk record, total SHA256, config

A re-run with the same config trusts a chunk only when its file hashes to its record, and
regenerates it otherwise (generation is deterministic, so the bytes come out the same).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

import linklm
from linklm import atomic, schema
from linklm.config import GenerationConfig
from linklm.data import allocator, simulate
from linklm.errors import DatasetError

MANIFEST = "manifest.json"
GENERATION = "generation.json"
CHUNK_DIR = "chunks"
FORMAT = "linklm-dataset/1"
# What a chunk's bytes depend on besides the config: simulate.py's draws and the Parquet
# layout below. Bump it when either changes: generation.json records it, so resuming a folder
# built by another version is refused like another config instead of mixing chunks of both.
# Folders without it were built by version 1.
GENERATOR = "linklm-chunks/3"
# Derived folders a config change invalidates together with the chunks.
DERIVED_DIRS = ("chunks", "validation", "export", "shards", "import")


@dataclass(frozen=True)
class ChunkRecord:
    index: int
    file: str
    first_id: int
    rows: int
    bytes: int
    sha256: str


def _required(field: pa.Field) -> pa.Field:
    kind = field.type
    if pa.types.is_large_list(kind):
        kind = pa.large_list(pa.field("element", kind.value_type, nullable=False))
    return pa.field(field.name, kind, nullable=False)


# The contract has no nulls, so every column and list element is required: fewer
# definition levels to compute and store.
PARQUET_SCHEMA = pa.schema(
    _required(f) for f in pl.DataFrame(schema=schema.POLARS_SCHEMA).to_arrow().schema
)
_LISTS = [f.name for f in PARQUET_SCHEMA if pa.types.is_large_list(f.type)]
# Columns with many distinct values are not dictionary encoded; the rest (the 241-channel
# grid, the 0.1-step levels, the categories) are: 1-2 byte indices instead of 8-byte values,
# so zstd has a fraction of the bytes to compress and the files come out smaller.
_PLAIN = {
    "scenario_id",
    "device_a_coordinates",
    "device_b_coordinates",
    "link_distance_m",
    "rssi_dbm",
    "snr_db",
    "expected_throughput_mbps",
}
# The plain floats go byte-stream-split: zstd then compresses the bytes of like rank
# together, about 30 % less CPU than on whole doubles for 5 % more bytes (measured,
# benchmarks/bench_generate.py).
_BYTE_STREAM_SPLIT = {
    f"{c}.list.element" if c in _LISTS else c: "BYTE_STREAM_SPLIT"
    for c in schema.COLUMNS
    if c in _PLAIN
    and pa.types.is_floating(
        PARQUET_SCHEMA.field(c).type.value_type if c in _LISTS else PARQUET_SCHEMA.field(c).type
    )
}
PARQUET_OPTIONS = {
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": [
        f"{c}.list.element" if c in _LISTS else c for c in schema.COLUMNS if c not in _PLAIN
    ],
    "column_encoding": _BYTE_STREAM_SPLIT,
    # Min/max only where a reader can skip by them: scenario_id (lookups by id). On the
    # other columns every chunk spans nearly the whole range, and they cost 10 % of a write.
    "write_statistics": ["scenario_id"],
}


def write_chunk(table: pa.Table, path: Path) -> None:
    """One chunk as Parquet, with pyarrow: it can dictionary-encode numeric columns."""
    pq.write_table(table.cast(PARQUET_SCHEMA), path, **PARQUET_OPTIONS)


def generation_identity(config: GenerationConfig | dict) -> dict:
    """What generation.json holds: the config and the generator version (an import gives
    its own identity: the file's SHA256 and how it was imported)."""
    if isinstance(config, dict):
        return config
    return config.model_dump(mode="json") | {"generator": GENERATOR}


def chunk_file(index: int) -> str:
    return f"{CHUNK_DIR}/chunk-{index:05d}.parquet"


def _record_file(index: int) -> str:
    return f"{CHUNK_DIR}/chunk-{index:05d}.json"


def lock(out_dir: Path) -> FileLock:
    """One writer per dataset folder, and none while a run reads it (``reading``): a second
    one fails at once instead of corrupting it, or changing the rows a training is reading
    (its run.json would record a SHA256 the folder no longer holds)."""
    return atomic.claim_folder(out_dir, lambda lock_file: _busy(out_dir, lock_file))


def _busy(out_dir: Path, lock_file: Path) -> DatasetError:
    if atomic.held_by_readers(lock_file):
        return DatasetError(
            f"{out_dir}: a training, evaluation or prediction is reading this dataset (lock "
            f"{lock_file}); writing it now would change the rows under it: wait for it to "
            "finish, or write to another out_dir"
        )
    return DatasetError(
        f"{out_dir}: another run is writing this dataset (lock {lock_file}); "
        "wait for it or use another out_dir"
    )


def reading(data_dir: Path):
    """Hold the dataset shared while a run reads it: readers together, no writer meanwhile
    (``lock``); a dataset being written now is refused at once."""
    return atomic.share_folder(
        data_dir,
        lambda lock_file: DatasetError(
            f"{data_dir}: another run is writing this dataset (lock {lock_file}); wait for it "
            "to finish"
        ),
    )


# Bytes a row takes on disk, measured on 20,000 rows of the default config: its Parquet
# chunk, its share of the CSV+ZIP export, its conversation in the shards.
BYTES_PER_ROW = {"chunks": 140, "export": 1_120, "shards": 1_030}


def bytes_needed(out_dir: Path, n_rows: int, export: bool = True) -> int:
    """About what the data flow writes into ``out_dir`` for ``n_rows`` (0 for a folder
    that has its manifest already: a re-run verifies more than it writes)."""
    if (Path(out_dir) / MANIFEST).exists():
        return 0
    parts = ("chunks", "shards", "export") if export else ("chunks", "shards")
    return n_rows * sum(BYTES_PER_ROW[p] for p in parts)


def check_buildable(out_dir: Path) -> None:
    """Refuse to build a dataset into a folder that holds other things: a flow that builds
    its data when ``--data-dir`` has none (sweep, learning curve) would otherwise write chunks
    beside whatever a mistyped path points at. A new or empty folder, or one the data flow
    started (an interrupted run, resumed), is fine."""
    out_dir = Path(out_dir)
    if not out_dir.exists() or (out_dir / MANIFEST).exists():
        return
    if not out_dir.is_dir():
        raise DatasetError(f"{out_dir}: a file, not a dataset folder")
    started = (out_dir / GENERATION).exists() or (out_dir / CHUNK_DIR).is_dir()
    if not started and any(out_dir.iterdir()):
        raise DatasetError(
            f"{out_dir}: a folder with other files in it, not a dataset (no {MANIFEST}); give "
            "a dataset folder, or a new or empty one to build the dataset in"
        )


def check_compatible(
    out_dir: Path, config: GenerationConfig | dict, overwrite: bool = False
) -> bool:
    """False if ``out_dir`` is new or holds ``config``'s dataset; True if it must be replaced.

    Raises DatasetError for a folder made with another config, or by another generator
    version, unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    previous = atomic.read_json_or_none(out_dir / GENERATION)
    wanted = generation_identity(config)
    if previous is None:
        # generation.json is written before any chunk, so chunks without it were made with
        # a config nobody can tell: reusing them could pass one seed's rows off as another's
        made = any((out_dir / CHUNK_DIR).glob("chunk-*")) or (out_dir / MANIFEST).exists()
        if not made:
            return False
        if overwrite:
            return True
        raise DatasetError(
            f"{out_dir} holds chunks but no readable {GENERATION}, so the config they were "
            "made with is unknown; use another out_dir or overwrite it (--overwrite)"
        )
    if previous == wanted:
        return False
    if overwrite:
        return True
    changed = ", ".join(
        f"{k} {previous.get(k)!r} -> {v!r}" for k, v in wanted.items() if previous.get(k) != v
    )
    raise DatasetError(
        f"{out_dir} holds a dataset made with another config or generator (changed: {changed}); "
        "use another out_dir or overwrite it (--overwrite)"
    )


def prepare(out_dir: Path, config: GenerationConfig | dict, overwrite: bool = False) -> None:
    """Claim ``out_dir`` for ``config`` (hold ``lock`` first); sweep what a killed run left."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.sweep_temp_files(out_dir)
    if check_compatible(out_dir, config, overwrite):
        for name in DERIVED_DIRS:
            shutil.rmtree(out_dir / name, ignore_errors=True)
        (out_dir / MANIFEST).unlink(missing_ok=True)
    atomic.write_json(out_dir / GENERATION, generation_identity(config))


def ensure_chunk(
    out_dir: Path, config: GenerationConfig, plan: simulate.ChunkPlan
) -> tuple[ChunkRecord, str]:
    """Return the chunk's record and what happened: 'verified', 'generated' or 'regenerated'."""
    path = out_dir / chunk_file(plan.index)
    record_path = out_dir / _record_file(plan.index)
    existed = path.exists()
    if existed and record_path.exists():
        try:
            record = ChunkRecord(**json.loads(record_path.read_text()))
        except (ValueError, TypeError):
            record = None
        if (
            record is not None
            and record.rows == plan.n_rows
            and record.first_id == plan.first_id
            and atomic.sha256_file(path) == record.sha256
        ):
            return record, "verified"

    allocator.keep_freed_memory()  # once per process: chunks reuse pages, not fault them in
    table = simulate.generate_table(config, plan)
    with atomic.atomic_path(path) as tmp:
        write_chunk(table, tmp)
    record = ChunkRecord(
        index=plan.index,
        file=chunk_file(plan.index),
        first_id=plan.first_id,
        rows=table.num_rows,
        bytes=path.stat().st_size,
        sha256=atomic.sha256_file(path),
    )
    atomic.write_json(record_path, asdict(record))
    return record, "regenerated" if existed else "generated"


def _self_sha(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_manifest(
    out_dir: Path,
    config: GenerationConfig | None,
    records: list[ChunkRecord],
    imported: dict | None = None,
) -> dict:
    """Write manifest.json last, once every chunk is on disk and hashed. An imported
    folder has no generation config; ``imported`` says where its rows came from."""
    records = sorted(records, key=lambda r: r.index)
    indices = [r.index for r in records]
    if indices != list(range(len(records))):
        raise DatasetError(f"{out_dir}: chunk records are not 0..{len(records) - 1}: {indices}")
    manifest = {
        "format": FORMAT,
        "linklm_version": linklm.__version__,
        "generator": GENERATOR if config is not None else imported["importer"],
        "generation": config.model_dump(mode="json") if config is not None else None,
        "generation_sha256": config.fingerprint() if config is not None else None,
        "columns": list(schema.COLUMNS),
        "rows": sum(r.rows for r in records),
        "bytes": sum(r.bytes for r in records),
        "chunks": [asdict(r) for r in records],
        "dataset_sha256": hashlib.sha256("\n".join(r.sha256 for r in records).encode()).hexdigest(),
    }
    if imported is not None:
        manifest["import"] = imported
    manifest["manifest_sha256"] = _self_sha(manifest)
    atomic.write_json(out_dir / MANIFEST, manifest)
    return manifest


def read_manifest(out_dir: Path) -> dict:
    """The manifest of a dataset folder, without reading its chunks (a CLI's check before it
    starts anything; the flow verifies the chunks themselves)."""
    path = Path(out_dir) / MANIFEST
    if not Path(out_dir).is_dir():  # a mistyped path: not a run that did not finish
        raise DatasetError(
            f"{out_dir}: no such dataset folder; build one with python -m flows.data "
            f"--out-dir {out_dir}"
        )
    if not path.exists():
        raise DatasetError(
            f"{path}: no manifest (the run did not finish, or it was deleted); "
            "re-run the data flow with the same config to resume and rebuild it"
        )
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise DatasetError(
            f"{path}: not valid JSON ({exc}); re-run the data flow to rebuild it"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a {FORMAT} manifest; re-run the data flow to rebuild it")
    if manifest.get("manifest_sha256") != _self_sha(manifest):
        raise DatasetError(
            f"{path}: edited after it was written (its own SHA256 does not match); "
            "re-run the data flow with the same config to rebuild it"
        )
    return manifest


@dataclass(frozen=True)
class ChunkProblem:
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


def verify(out_dir: Path) -> list[ChunkProblem]:
    """Check every chunk against the manifest; an empty list means the dataset is intact."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    problems = []
    for chunk in manifest["chunks"]:
        path = out_dir / chunk["file"]
        if not path.exists():
            problems.append(ChunkProblem(chunk["file"], "missing"))
            continue
        size = path.stat().st_size
        if size != chunk["bytes"]:
            problems.append(
                ChunkProblem(
                    chunk["file"],
                    f"{size} bytes, manifest says {chunk['bytes']} (truncated or replaced)",
                )
            )
            continue
        digest = atomic.sha256_file(path)
        if digest != chunk["sha256"]:
            problems.append(
                ChunkProblem(
                    chunk["file"],
                    f"SHA256 {digest[:12]}... != manifest {chunk['sha256'][:12]}... (tampered)",
                )
            )
    return problems


def require_intact(out_dir: Path) -> dict:
    """The manifest of a dataset whose chunks all verify, or a DatasetError naming the bad ones."""
    problems = verify(out_dir)
    if problems:
        raise DatasetError(
            f"{out_dir}: {len(problems)} bad chunk(s): {'; '.join(map(str, problems))}; "
            "re-run the data flow with the same config to regenerate them"
        )
    return read_manifest(out_dir)


def chunk_paths(out_dir: Path, manifest: dict | None = None) -> list[Path]:
    manifest = manifest or read_manifest(out_dir)
    return [Path(out_dir) / c["file"] for c in manifest["chunks"]]


def build(
    out_dir: Path, config: GenerationConfig, workers: int = 2, overwrite: bool = False
) -> dict:
    """Generate (or resume) a dataset without Prefect, for notebooks and benchmarks."""
    from concurrent.futures import ThreadPoolExecutor

    out_dir = Path(out_dir)
    folder_lock = lock(out_dir)
    try:
        prepare(out_dir, config, overwrite)
        plans = simulate.plan_chunks(config)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda p: ensure_chunk(out_dir, config, p), plans))
        return write_manifest(out_dir, config, [record for record, _ in results])
    finally:
        folder_lock.release()


def scan(out_dir: Path) -> pl.LazyFrame:
    """All rows of a dataset as one lazy frame, in chunk order."""
    return pl.scan_parquet([str(p) for p in chunk_paths(out_dir)])
