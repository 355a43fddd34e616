"""The data flow: seeded chunks -> manifest -> validation -> CSV/ZIP export -> JSONL shards.

    python -m flows.data --n-rows 20000 --out-dir runs/data          # build (or resume)
    python -m flows.data --n-rows 20000 --stratify-by image_obstruction_detected --balance oversample
    python -m flows.data verify runs/data                             # check chunks vs manifest
    python -m flows.data validate links.csv                           # check any CSV/Parquet/folder
    python -m flows.data import survey.csv --out-dir runs/survey      # rows made elsewhere
    python -m flows.data --n-rows 10000000 --dask-address tcp://scheduler:8786 --out-dir /shared/data

Or from Python: ``data_flow(DataFlowConfig(...))``. A re-run with the same config skips every
chunk whose SHA256 verifies and regenerates missing or corrupt ones; the later steps are
Prefect cache hits while the dataset and their settings are unchanged.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import ValidationError

from flows.cli import ArgumentParser, fail, option_error, run_cli
from linklm import atomic, schema
from linklm.config import (
    DataFlowConfig,
    GenerationConfig,
    ImportConfig,
    PromptConfig,
    SplitConfig,
)
from linklm.data import dataset, export, imports, prompts, rules, shards, simulate, validate
from linklm.errors import LinkLMError, first_line
from tasks import data as t
from tasks import storage as t_storage

WORKERS = 2


def _cached_or_refreshed(task, is_current: bool):
    """The task as is when its outputs verify, else one that ignores (and refreshes) the cache."""
    return task if is_current else task.with_options(refresh_cache=True)


def _generate_chunks(config: DataFlowConfig) -> list[dict]:
    logger = get_run_logger()
    plans = simulate.plan_chunks(config.generation)
    progress = create_progress_artifact(progress=0.0, description="chunks written")
    futures = [t.generate_chunk.submit(config.out_dir, config.generation, p.index) for p in plans]
    records, started = [], time.perf_counter()
    for done, future in enumerate(as_completed(futures), start=1):
        records.append(future.result())
        update_progress_artifact(progress, progress=100.0 * done / len(plans))
        if done == len(plans) or done % max(1, len(plans) // 10) == 0:
            rows = sum(r["rows"] for r in records)
            rate = rows / max(time.perf_counter() - started, 1e-9)
            logger.info("chunks %d/%d (%d rows, %.0f rows/s)", done, len(plans), rows, rate)
    statuses = [r["status"] for r in records]
    logger.info(
        "chunks: %d generated, %d verified and skipped, %d regenerated",
        statuses.count("generated"),
        statuses.count("verified"),
        statuses.count("regenerated"),
    )
    return records


@flow(name="data", task_runner=ThreadPoolTaskRunner(max_workers=WORKERS))
def data_flow(config: DataFlowConfig = DataFlowConfig()) -> dict:  # noqa: B008 (UI form default)
    """Build a verified, validated, exported and sharded link dataset in ``config.out_dir``.

    The chunks are made on this flow's threads, or, where the config names other workers
    (``workers``, ``dask_address``: fields a deployment's run or the UI form can set), in a
    subflow on that task runner; the bytes do not depend on it."""
    if config.dask_address is None and config.workers == WORKERS:
        return build_dataset(config)
    runner = task_runner(config.workers, config.dask_address)
    return data_on_runner.with_options(task_runner=runner)(config)


@flow(name="data-on-runner")
def data_on_runner(config: DataFlowConfig) -> dict:
    """The data flow's work on the task runner its config chose (threads or Dask)."""
    return build_dataset(config)


def build_dataset(config: DataFlowConfig) -> dict:
    """The data flow's steps, on the task runner of the flow that calls it."""
    logger = get_run_logger()
    out = config.out_dir
    if config.prompt.template:  # a leaking template fails before the rows are made
        prompts.template_fields(config.prompt.template)
    folder_lock = dataset.lock(out)
    try:
        t.prepare_folder(out, config.generation, config.overwrite)
        records = _generate_chunks(config)
        manifest = t.write_manifest(out, config.generation, records)
        sha = manifest["dataset_sha256"]
        logger.info("dataset %s: %d rows in %d chunks", sha[:12], manifest["rows"], len(records))

        result = _finish_dataset(
            out,
            manifest,
            config.split,
            config.prompt,
            config.shard_rows,
            config.export_csv,
            config.max_error_rate,
        )
    finally:
        folder_lock.release()
    return _published(result, config.artifacts_url)


def _finish_dataset(
    out: Path,
    manifest: dict,
    split: SplitConfig,
    prompt: PromptConfig,
    shard_rows: int,
    export_csv: bool,
    max_error_rate: float,
) -> dict:
    """A folder's chunks and manifest -> validation, CSV/ZIP export and shards: the steps a
    generated and an imported dataset share (hold the folder's lock)."""
    logger = get_run_logger()
    out, sha = Path(out), manifest["dataset_sha256"]
    validate_task = _cached_or_refreshed(
        t.validate_dataset, validate.current_summary(out, sha) is not None
    )
    summary = validate_task(out, sha)
    _publish_validation(summary, manifest)
    validate.enforce(summary, max_error_rate)
    excluded = validate.quarantined_ids(summary) if summary["bad_rows"] else []

    exported = None
    if export_csv:
        export_task = _cached_or_refreshed(
            t.export_csv_zip, export.current_record(out, sha) is not None
        )
        exported = export_task(out, sha)
    key = shards.shard_key(sha, split, prompt, shard_rows, excluded)
    shard_task = _cached_or_refreshed(t.write_shards, shards.current_record(out, key) is not None)
    shard_record = shard_task(out, sha, split, prompt, shard_rows, excluded)
    logger.info("data ready in %s: splits %s", out, shard_record["rows"])
    return {
        "out_dir": str(out),
        "dataset_sha256": sha,
        "rows": manifest["rows"],
        "bad_rows": summary["bad_rows"],
        "splits": shard_record["rows"],
        "export": exported,
        "validation": summary["files"],
    }


def _published(result: dict, artifacts_url: str | None) -> dict:
    """The result with where the finished folder was copied (``artifacts_url``), if anywhere."""
    sha = result["dataset_sha256"]
    published = t_storage.publish_folder(Path(result["out_dir"]), artifacts_url, "data", sha[:12])
    return {"out_dir": result["out_dir"], "artifacts": published} | result


@flow(name="import-data")
def import_flow(config: ImportConfig) -> dict:
    """Rows made elsewhere -> a dataset folder: the contract enforced row by row (bad rows
    quarantined by scenario_id, the rest kept), agreement with the physics reported (or
    enforced with ``require_physics``), then the data flow's validation, export and shards."""
    logger = get_run_logger()
    out = config.out_dir
    mode = "enforce" if config.require_physics else "report"
    manifest = t.import_rows(config.source, out, mode, config.max_error_rate, config.overwrite)
    imported = manifest["import"]
    logger.info(
        "imported %s: %d rows kept, %d quarantined (%s); labels the physics re-derives: %s",
        config.source,
        imported["rows_kept"],
        imported["rows_quarantined"],
        out / imports.REPORT_DIR / "quarantine.csv",
        rules.share_percent(imported["physics"]["agree_share"]),
    )
    folder_lock = dataset.lock(out)
    try:
        result = _finish_dataset(
            out,
            manifest,
            config.split,
            config.prompt,
            config.shard_rows,
            config.export_csv,
            1.0,
        )
    finally:
        folder_lock.release()
    result |= {"imported": imported}
    return _published(result, config.artifacts_url)


def _publish_validation(summary: dict, manifest: dict) -> None:
    markdown = Path(summary["files"]["report_md"]).read_text()
    markdown += (
        f"\n## Manifest\n\n- dataset SHA256 `{manifest['dataset_sha256']}`\n"
        f"- {manifest['rows']} rows, {len(manifest['chunks'])} chunks, {manifest['bytes']} bytes\n"
        f"- generation config `{manifest['generation']}`\n"
    )
    create_markdown_artifact(
        key="data-validation", markdown=markdown, description="validation summary"
    )
    create_table_artifact(
        key="data-manifest",
        table=[
            {k: c[k] for k in ("file", "first_id", "rows", "bytes", "sha256")}
            for c in manifest["chunks"]
        ],
        description=f"chunks of dataset {manifest['dataset_sha256'][:12]}",
    )


def task_runner(workers: int = WORKERS, dask_address: str | None = None):
    """Threads on this machine, or the workers of a running Dask cluster (``tcp://host:8786``).

    On a cluster every chunk task runs on some Dask worker, so ``out_dir`` must be a folder
    all of them and this machine share (NFS, a mounted bucket), and the Prefect API must be
    a server they can all reach. The bytes of the dataset do not depend on the runner.
    """
    if dask_address:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise LinkLMError("dask_address needs prefect-dask: pip install '.[dask]'") from None
        return DaskTaskRunner(address=dask_address)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return ThreadPoolTaskRunner(max_workers=workers)


def check_dask_scheduler(address: str, timeout_s: float = 10.0) -> None:
    """One line, before the folder is claimed, when no Dask scheduler answers at ``address``
    (the runner would fail only once the flow had started, after a 30 s wait and a long
    traceback)."""
    try:
        from distributed import Client
    except ImportError:
        fail("--dask-address needs prefect-dask: pip install '.[dask]'")
    try:
        Client(address, timeout=timeout_s).close()
    except (OSError, TimeoutError, ValueError) as exc:
        fail(f"--dask-address {address}: no Dask scheduler answers there ({first_line(exc)})")


def run_data_flow(
    config: DataFlowConfig, workers: int | None = None, dask_address: str | None = None
) -> dict:
    """The data flow on ``workers`` threads, or on a Dask cluster (the bytes do not change);
    either overrides the config's own choice."""
    update = {"workers": workers} if workers is not None else {}
    update |= {"dask_address": dask_address} if dask_address else {}
    return data_flow(config.model_copy(update=update))


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m flows.data",
        description=__doc__.split("\n")[0],
        epilog="Options of the default command: python -m flows.data run --help",
    )
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="build or resume a dataset (the default command)")
    d = DataFlowConfig()
    g = d.generation
    run.add_argument("--out-dir", type=Path, default=d.out_dir)
    run.add_argument("--n-rows", type=int, default=g.n_rows)
    run.add_argument("--chunk-size", type=int, default=g.chunk_size)
    run.add_argument("--seed", type=int, default=g.seed)
    run.add_argument(
        "--stratify-by",
        default="",
        help=f"comma-separated, any of {','.join(schema.STRATIFY_COLUMNS)}",
    )
    run.add_argument("--balance", default=g.balance, help="none | oversample | undersample")
    run.add_argument("--target", default=d.prompt.target, help="channel | throughput | both")
    run.add_argument(
        "--template-file", type=Path, help="a prompt template (str.format over input fields)"
    )
    run.add_argument("--train-fraction", type=float, default=d.split.train)
    run.add_argument("--val-fraction", type=float, default=d.split.val)
    run.add_argument("--shard-rows", type=int, default=d.shard_rows)
    run.add_argument("--max-error-rate", type=float, default=d.max_error_rate)
    run.add_argument("--no-export", action="store_true", help="skip the CSV/ZIP export")
    run.add_argument("--workers", type=int, default=WORKERS, help="threads generating chunks")
    run.add_argument(
        "--dask-address",
        help="generate chunks on a Dask cluster (tcp://host:8786); out_dir must be shared",
    )
    run.add_argument(
        "--artifacts-url", help="folder or fsspec URL the finished dataset is copied to"
    )
    run.add_argument(
        "--overwrite", action="store_true", help="replace a dataset made with another config"
    )
    imp = sub.add_parser(
        "import",
        help="import rows made elsewhere (CSV, Parquet, JSONL) into a dataset folder",
        description="Bad rows are quarantined by scenario_id and the rest imported; agreement "
        "with the synthetic physics is reported (--require-physics enforces it).",
    )
    i = ImportConfig(source=Path("x.csv"))
    imp.add_argument("source", type=Path, help="survey.csv, .parquet, .jsonl")
    imp.add_argument("--out-dir", type=Path, default=i.out_dir)
    imp.add_argument(
        "--require-physics",
        action="store_true",
        help="quarantine rows whose labels the synthetic physics does not re-derive",
    )
    imp.add_argument(
        "--max-error-rate",
        type=float,
        default=i.max_error_rate,
        help="fail when more rows than this fraction break the contract (default: import "
        "the good rows whatever their share)",
    )
    imp.add_argument("--target", default=i.prompt.target, help="channel | throughput | both")
    imp.add_argument("--train-fraction", type=float, default=i.split.train)
    imp.add_argument("--val-fraction", type=float, default=i.split.val)
    imp.add_argument("--shard-rows", type=int, default=i.shard_rows)
    imp.add_argument("--no-export", action="store_true", help="skip the CSV/ZIP export")
    imp.add_argument("--artifacts-url", help="folder or fsspec URL the dataset is copied to")
    imp.add_argument(
        "--overwrite", action="store_true", help="replace a dataset made from another file"
    )
    ver = sub.add_parser("verify", help="check a dataset's chunks against its manifest")
    ver.add_argument("out_dir", type=Path)
    val = sub.add_parser("validate", help="validate a dataset folder, CSV or Parquet file")
    val.add_argument("path", type=Path)
    val.add_argument("--report-dir", type=Path)
    val.add_argument("--max-error-rate", type=float, default=0.0)
    return p


def config_from_args(args: argparse.Namespace) -> DataFlowConfig:
    template = None
    if args.template_file:
        if not args.template_file.exists():
            fail(f"{args.template_file}: template file not found")
        template = args.template_file.read_text()
        try:
            prompts.template_fields(template)
        except LinkLMError as exc:
            fail(f"{args.template_file}: {exc}")
    return DataFlowConfig(
        out_dir=args.out_dir,
        generation=GenerationConfig(
            n_rows=args.n_rows,
            chunk_size=args.chunk_size,
            seed=args.seed,
            stratify_by=tuple(s.strip() for s in args.stratify_by.split(",") if s.strip()),
            balance=args.balance,
        ),
        split=SplitConfig(train=args.train_fraction, val=args.val_fraction),
        prompt=PromptConfig(template=template, target=args.target),
        max_error_rate=args.max_error_rate,
        export_csv=not args.no_export,
        shard_rows=args.shard_rows,
        overwrite=args.overwrite,
        workers=args.workers,
        dask_address=args.dask_address,
        artifacts_url=args.artifacts_url,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "verify", "validate", "import", "-h", "--help"):
        argv.insert(0, "run")
    args = _parser().parse_args(argv)
    if args.command == "verify":
        problems = dataset.verify(args.out_dir)
        if problems:
            for p in problems:
                print(f"BAD {p}")
            fail(
                f"{args.out_dir}: {len(problems)} bad chunk(s); re-run the data flow with the same config to regenerate them"
            )
        manifest = dataset.read_manifest(args.out_dir)
        print(
            f"OK {args.out_dir}: {len(manifest['chunks'])} chunks, {manifest['rows']} rows, dataset SHA256 {manifest['dataset_sha256']}"
        )
        return 0
    if args.command == "validate":
        result = validate.validate_path(args.path, args.report_dir)
        print(validate.to_markdown(result))
        print(
            f"report: {result.files['report_md']}; problems: {result.files['problems_csv']}; quarantine: {result.files['quarantine_csv']}"
        )
        validate.enforce(result.summary(), args.max_error_rate)
        return 0
    if args.command == "import":
        return _import_command(args)
    if args.workers < 1:
        fail(f"invalid option workers: must be >= 1, got {args.workers}")
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        fail(option_error(exc))
    # Fail before starting Prefect when the folder belongs to another config, or the Dask
    # scheduler asked for is not there.
    dataset.check_compatible(config.out_dir, config.generation, config.overwrite)
    need = dataset.bytes_needed(config.out_dir, config.generation.n_rows, config.export_csv)
    atomic.check_writable(config.out_dir, need, f"{config.generation.n_rows:,} rows")
    if args.dask_address:
        check_dask_scheduler(args.dask_address)
    result = run_data_flow(config)
    print(
        f"dataset {result['dataset_sha256'][:12]}: {result['rows']} rows, splits {result['splits']}, in {result['out_dir']}"
    )
    return 0


def _import_command(args: argparse.Namespace) -> int:
    try:
        config = ImportConfig(
            source=args.source,
            out_dir=args.out_dir,
            require_physics=args.require_physics,
            split=SplitConfig(train=args.train_fraction, val=args.val_fraction),
            prompt=PromptConfig(target=args.target),
            max_error_rate=args.max_error_rate,
            export_csv=not args.no_export,
            shard_rows=args.shard_rows,
            overwrite=args.overwrite,
            artifacts_url=args.artifacts_url,
        )
    except ValidationError as exc:
        fail(option_error(exc))
    # before Prefect starts: a missing file, an unknown kind, a folder of another dataset
    imports.check_source(config.source)
    mode = "enforce" if config.require_physics else "report"
    if (config.out_dir / dataset.GENERATION).exists():
        dataset.check_compatible(
            config.out_dir,
            imports.identity(config.source, mode, imports.CHUNK_ROWS),
            config.overwrite,
        )
    result = import_flow(config)
    imported = result["imported"]
    physics = imported["physics"]
    print(
        f"imported {config.source}: {imported['rows_kept']} of {imported['rows_read']} rows "
        f"kept, {imported['rows_quarantined']} quarantined "
        f"({config.out_dir / imports.REPORT_DIR / 'quarantine.csv'}); labels the synthetic "
        f"physics re-derives: {rules.share_percent(physics['agree_share'])} of "
        f"{physics['rows_checked']} rows "
        f"({'enforced' if config.require_physics else 'reported'}); dataset "
        f"{result['dataset_sha256'][:12]}, splits {result['splits']}, in {result['out_dir']}"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
