"""Batch-scoring speed: ``Predictor`` on a file of links, batched against one link at a time.

    python benchmarks/bench_predict.py                         # the default model, 512 links
    python benchmarks/bench_predict.py --model runs/demo/train/demo-... --rows 2000
    python benchmarks/bench_predict.py --rows 20000 --block-rows 1000000   # one block

Both paths go through the whole predict path (input checks with the validator's rules,
prompt, greedy answer, channel ranking for the top-3, guardrails); the reference sends one
link per call, as a loop over a planner's links would. Figures: rows/s, speed-up, peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from linklm.config import GenerationConfig
from linklm.data import dataset, export
from linklm.model import examples
from linklm.serving import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="linklm-default")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--one-by-one-rows", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--block-rows",
        type=int,
        default=predict.BLOCK_ROWS,
        help="rows answered between progress lines (a huge value: the whole batch at once)",
    )
    args = parser.parse_args()
    predict.BLOCK_ROWS = args.block_rows

    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    dataset.build(work / "data", GenerationConfig(n_rows=max(10 * args.rows, 5000), seed=5))
    links = export.to_seed_csv_frame(examples.split_rows(work / "data", "test", args.rows))
    links = links.drop("recommended_channel_mhz", "expected_throughput_mbps", "rssi_dbm", "snr_db")

    predictor = predict.Predictor(args.model, batch_size=args.batch_size)
    predictor.predict(links.head(8))  # warm-up
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    started = time.perf_counter()
    batched = predictor.predict(links)
    t_batched = time.perf_counter() - started

    few = links.head(args.one_by_one_rows)
    started = time.perf_counter()
    singles = [predictor.predict(few.slice(i, 1)).rows for i in range(few.height)]
    t_single = time.perf_counter() - started
    same = pl.concat(singles).drop("raw").equals(batched.rows.head(few.height).drop("raw"))

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    answering_mb = (peak_mb - before_mb) if peak_mb > before_mb else 0.0
    rate_b, rate_s = batched.rows.height / t_batched, few.height / t_single
    print(f"model {predictor.source}, {torch.get_num_threads()} threads")
    print(f"{'path':<36}{'links':>7}{'seconds':>10}{'rows/s':>10}")
    print(f"{'one link per call (reference)':<36}{few.height:>7}{t_single:>10.2f}{rate_s:>10.1f}")
    print(
        f"{f'one call, batches of {args.batch_size}':<36}{batched.rows.height:>7}{t_batched:>10.2f}{rate_b:>10.1f}"
    )
    print(
        f"speed-up {rate_b / rate_s:.1f}x; answers identical: {same}; peak RSS {peak_mb:.0f} MB "
        f"(the whole process: building the data too), {answering_mb:.0f} MB of it above the "
        f"peak before answering (blocks of {args.block_rows} rows)"
    )


if __name__ == "__main__":
    main()
