"""Scaling out on one machine: data generation on 1 vs 2 Dask worker processes (threads as
the plain reference), and training tokens/s on 1 vs 2 DDP processes with the same global
batch.

    python benchmarks/bench_scale.py                  # 40,000 rows, 60 training steps
    python benchmarks/bench_scale.py --rows 200000 --steps 200

Both go through the real paths: the data flow with ``dask_address`` set (Prefect's
temporary server, a ``distributed.LocalCluster`` of worker processes), and
``training.train`` with ``nproc_per_node`` (torchrun, gloo). The figures are honest ones
for this machine: with two cores, two processes split the same two cores, so expect no
gain; on a machine with more cores (data) or GPUs (training) they are the way to scale.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from linklm.config import DataFlowConfig, GenerationConfig, TrainConfig
from linklm.model import training


def data_rows_per_second(rows: int, work: Path, workers: int | None) -> tuple[float, str]:
    """(rows/s of the data flow, dataset SHA256) on threads (None) or Dask processes."""
    import distributed

    from flows.data import data_flow

    generation = GenerationConfig(n_rows=rows, chunk_size=5000, seed=3)
    out = work / f"data-{workers or 'threads'}"
    config = DataFlowConfig(out_dir=out, generation=generation, export_csv=False)
    started = time.perf_counter()
    if workers is None:
        result = data_flow(config)
    else:
        with distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            result = data_flow(
                config.model_copy(update={"dask_address": cluster.scheduler_address})
            )
    return rows / (time.perf_counter() - started), result["dataset_sha256"]


def training_tokens_per_second(data: Path, work: Path, processes: int, steps: int) -> dict:
    config = TrainConfig(
        data_dir=data,
        out_dir=work / "runs",
        run_name=f"ddp-{processes}",
        max_steps=steps,
        batch_size=16 // processes,  # the same global batch of 16
        eval_rows=0,
        warmup_steps=0,
        save_steps=10**6,
        nproc_per_node=processes,
        group_by_length=False,
    )
    started = time.perf_counter()
    summary = training.train(config)
    wall = time.perf_counter() - started
    run = json.loads((work / "runs" / f"ddp-{processes}" / "run.json").read_text())
    return {
        "tokens_per_second": run["tokens_per_second"],
        "wall_seconds": wall,
        "final_loss": summary["final_train_loss"],
        "global_batch": run["global_batch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    print(f"\ndata flow, {args.rows:,} rows (chunks of 5,000, no export)")
    print(f"{'runner':<34}{'rows/s':>10}  dataset")
    shas = set()
    for label, workers in (
        ("2 threads (plain reference)", None),
        ("Dask, 1 worker process", 1),
        ("Dask, 2 worker processes", 2),
    ):
        rate, sha = data_rows_per_second(args.rows, work, workers)
        shas.add(sha)
        print(f"{label:<34}{rate:>10,.0f}  {sha[:12]}")
    print(f"same dataset on every runner: {len(shas) == 1}")

    data = work / "data-threads"
    print(f"\ntraining, the default model, {args.steps} steps, global batch 16")
    print(f"{'processes':<34}{'tokens/s':>10}{'wall s':>9}{'last loss':>11}")
    for processes in (1, 2):
        figures = training_tokens_per_second(data, work, processes, args.steps)
        label = "1 (plain reference)" if processes == 1 else f"{processes} (DDP, gloo)"
        print(
            f"{label:<34}{figures['tokens_per_second']:>10,.0f}{figures['wall_seconds']:>9.1f}"
            f"{figures['final_loss']:>11.4f}"
        )
    print(
        "\nOn 2 cores the processes share the same cores (and DDP adds a gradient all-reduce "
        "each step), so no gain is expected here; wall time includes each run's start-up "
        "(torchrun, the ranks' imports)."
    )


if __name__ == "__main__":
    main()
