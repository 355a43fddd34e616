"""Tasks of the data flow: thin wrappers over linklm.data.dataset / validate / export / shards.

Chunk tasks are not cached by Prefect on purpose: the truth about a chunk is its file, and
``ensure_chunk`` skips a chunk only when its bytes hash to its record (a cache entry cannot
know that a file was deleted or tampered with since). The later steps are keyed by the
dataset's SHA256 and their configs, so an unchanged step is a Prefect cache hit; the flow
refreshes the cache when a step's output files no longer verify.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from linklm.config import GenerationConfig, PromptConfig, SplitConfig
from linklm.data import dataset, export, imports, shards, simulate, validate
from tasks.retry import only_transient

CACHED = {"cache_policy": INPUTS + TASK_SOURCE, "persist_result": True}


@task(
    name="prepare-dataset-folder",
    cache_policy=NO_CACHE,
    retries=2,
    retry_condition_fn=only_transient,
    retry_delay_seconds=1,
)
def prepare_folder(out_dir: Path, generation: GenerationConfig, overwrite: bool) -> None:
    dataset.prepare(out_dir, generation, overwrite)


@task(
    name="generate-chunk",
    cache_policy=NO_CACHE,
    retries=2,
    retry_condition_fn=only_transient,
    retry_delay_seconds=1,
)
def generate_chunk(out_dir: Path, generation: GenerationConfig, index: int) -> dict:
    plan = simulate.plan_chunks(generation)[index]
    record, status = dataset.ensure_chunk(out_dir, generation, plan)
    get_run_logger().debug("chunk %d: %s (%d rows)", index, status, record.rows)
    return asdict(record) | {"status": status}


@task(
    name="write-manifest",
    cache_policy=NO_CACHE,
    retries=2,
    retry_condition_fn=only_transient,
    retry_delay_seconds=1,
)
def write_manifest(out_dir: Path, generation: GenerationConfig, records: list[dict]) -> dict:
    chunk_records = [
        dataset.ChunkRecord(**{k: v for k, v in r.items() if k != "status"}) for r in records
    ]
    dataset.write_manifest(out_dir, generation, chunk_records)
    return dataset.require_intact(out_dir)


@task(name="validate-dataset", retries=1, retry_condition_fn=only_transient, **CACHED)
def validate_dataset(out_dir: Path, dataset_sha256: str) -> dict:
    return validate.validate_path(out_dir).summary()


@task(
    name="export-csv-zip",
    retries=2,
    retry_condition_fn=only_transient,
    retry_delay_seconds=1,
    **CACHED,
)
def export_csv_zip(out_dir: Path, dataset_sha256: str) -> dict:
    return export.export_csv_zip(out_dir)


@task(
    name="write-shards",
    retries=2,
    retry_condition_fn=only_transient,
    retry_delay_seconds=1,
    **CACHED,
)
def write_shards(
    out_dir: Path,
    dataset_sha256: str,
    split: SplitConfig,
    prompt: PromptConfig,
    shard_rows: int,
    exclude_ids: list[int],
) -> dict:
    return shards.write_shards(out_dir, split, prompt, shard_rows, exclude_ids)


@task(name="import-rows", cache_policy=NO_CACHE, retries=1, retry_condition_fn=only_transient)
def import_rows(
    source: Path, out_dir: Path, physics_mode: str, max_error_rate: float, overwrite: bool
) -> dict:
    """Not cached: the truth is the file and the folder (an import rewrites the chunks to
    the same bytes, and the manifest says whether they changed)."""
    return imports.import_file(source, out_dir, physics_mode, max_error_rate, overwrite=overwrite)
