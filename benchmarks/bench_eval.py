"""Evaluation speed: batched greedy generation against one-by-one generation, same rows.

    python benchmarks/bench_eval.py                          # default model, 512 test rows
    python benchmarks/bench_eval.py --model runs/demo/train/demo-... --rows 1000

Both paths call the platform's ``linklm.model.answers.generate`` (left padding, KV cache, greedy,
stop at the end of the answer) on the same rows; the reference uses batch size 1, as a
naive loop over rows would. Also times channel ranking (one forward per batch for number-
token models) and checks that batched and one-by-one answers agree. Figures: examples/s,
the speed-up, peak RSS. An untrained model is fine for speed (answers have a fixed length
cap), but a trained run folder shows realistic answers.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from linklm.config import GenerationConfig
from linklm.data import dataset
from linklm.model import answers, examples, models, runs


def _timed(fn, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="linklm-default")
    parser.add_argument("--data-dir", type=Path, help="reuse a dataset folder")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--one-by-one-rows", type=int, default=128, help="rows for batch size 1")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-eval-")) / "data"
    if not (data_dir / "manifest.json").exists():
        dataset.build(data_dir, GenerationConfig(n_rows=max(10 * args.rows, 5000), seed=3))
    rows = examples.split_rows(data_dir, "test", args.rows)
    loaded = models.load(str(runs.run_weights(Path(args.model)) or args.model))
    m, tok, fmt = loaded.model, loaded.tokenizer, loaded.prompt_format
    answers.generate(m, tok, fmt, rows.head(8), batch_size=8)  # warm-up

    batched, t_batched = _timed(answers.generate, m, tok, fmt, rows, args.batch_size)
    few = rows.head(args.one_by_one_rows)
    single, t_single = _timed(answers.generate, m, tok, fmt, few, 1)
    _, t_rank = _timed(answers.rank_channels, m, tok, fmt, rows, args.batch_size)

    n_few = few.height
    agree = sum(a == b for a, b in zip(batched.raw[:n_few], single.raw, strict=True))
    batched_rate, single_rate = rows.height / t_batched, n_few / t_single
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"model {loaded.source} ({fmt.kind}), {torch.get_num_threads()} threads, "
        f"{rows.height} test rows"
    )
    print(f"{'path':<34}{'rows':>8}{'seconds':>10}{'examples/s':>12}")
    print(f"{'one by one (batch 1, reference)':<34}{n_few:>8}{t_single:>10.2f}{single_rate:>12.1f}")
    print(
        f"{f'batched (batch {args.batch_size})':<34}{rows.height:>8}{t_batched:>10.2f}"
        f"{batched_rate:>12.1f}"
    )
    print(
        f"{'channel ranking (batched)':<34}{rows.height:>8}{t_rank:>10.2f}"
        f"{rows.height / t_rank:>12.1f}"
    )
    print(
        f"speed-up batched / one by one: {batched_rate / single_rate:.1f}x; "
        f"answers identical on {agree}/{n_few} rows; peak RSS {peak_mb:.0f} MB "
        "(the whole process: preparing the data too)"
    )


if __name__ == "__main__":
    main()
