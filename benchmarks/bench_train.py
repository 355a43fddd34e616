"""Training throughput: length-grouped dynamic batches against naive fixed-length padding.

    python benchmarks/bench_train.py                 # 60 steps each, batch 32, 3 rounds
    python benchmarks/bench_train.py --steps 100 --mode lora
    python benchmarks/bench_train.py --spec scan_channels=0   # the default model on the whole scan

Both variants train the offline default model on the same rows with the same settings; the
naive one samples rows at random and pads every batch to the longest row of the dataset,
the platform's one groups rows of similar length and pads each batch to its own longest
row. Each variant runs in its own process so its peak RSS is its own. Figures: real
(non-padding) training tokens per second, the share of compute spent on padding, peak RSS.

The default model's prompt (8 scan pairs, every number one token) has the same length in
every row, so both variants pad nothing there; prompts of varying length are where grouping
pays: the whole-scan variant (``--spec scan_channels=0``) or a text tokenizer (``--model``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from linklm.config import GenerationConfig, TrainConfig
from linklm.data import dataset
from linklm.model import examples, models, training


class FixedLengthCollator(examples.LeftPadCollator):
    """Naive batching: every batch padded to one fixed width."""

    def __init__(self, pad_token_id: int, width: int):
        super().__init__(pad_token_id)
        self.width = width

    def __call__(self, features):
        batch = super().__call__(features)
        extra = self.width - batch["input_ids"].shape[1]
        if extra > 0:

            def left(t, value):
                return torch.cat([torch.full((t.shape[0], extra), value, dtype=t.dtype), t], dim=1)

            batch = {
                "input_ids": left(batch["input_ids"], self.pad_token_id),
                "attention_mask": left(batch["attention_mask"], 0),
                "position_ids": left(batch["position_ids"], 0),
                "labels": left(batch["labels"], -100),
            }
        return batch


class PaddingMeter:
    """Counts real and padded tokens per collated batch. The data loader collates one batch
    ahead of the step that uses it, so only the first ``batches`` collated ones were trained on."""

    def __init__(self, collator):
        self.collator, self.counts = collator, []

    def __call__(self, features):
        batch = self.collator(features)
        mask = batch["attention_mask"]
        self.counts.append((int(mask.sum()), mask.numel()))
        return batch

    def trained(self, batches: int) -> tuple[int, int]:
        """(real, total) tokens of the batches the optimizer steps consumed."""
        used = self.counts[:batches]
        return sum(r for r, _ in used), sum(t for _, t in used)


def run_variant(
    variant: str, data_dir: Path, steps: int, batch: int, mode: str, model: str
) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"bench-train-{variant}-"))
    config = TrainConfig(
        data_dir=data_dir,
        out_dir=work,
        run_name=variant,
        model=model,
        mode=mode,
        max_steps=steps,
        batch_size=batch,
        eval_rows=0,
        save_steps=10**9,
        logging_steps=10**9,
        group_by_length=variant == "grouped",
        max_rows=20_000,
    )
    prepared = training.prepare(config)
    trainer = training.build_trainer(config, prepared, work / variant)
    pad = prepared.tokenizer.pad_token_id
    collator = (
        examples.LeftPadCollator(pad)
        if variant == "grouped"
        else FixedLengthCollator(pad, max(prepared.train_set["length"]))
    )
    meter = PaddingMeter(collator)
    trainer.data_collator = meter
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    real, total = meter.trained(
        trainer.state.global_step * trainer.args.gradient_accumulation_steps
    )
    return {
        "variant": variant,
        "steps": steps,
        "seconds": seconds,
        "real_tokens_per_s": real / seconds,
        "padding_share": 1 - real / total,
        "peak_rss_mb": training.peak_memory_mb()["rss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mode", default="full")
    parser.add_argument("--model", default="linklm-default", help="registered name or folder")
    parser.add_argument(
        "--spec", action="append", default=[], metavar="FIELD=VALUE", help="a default-model variant"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    parser.add_argument("--child", choices=["grouped", "naive"])
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()
    if args.child:
        print(
            json.dumps(
                run_variant(
                    args.child, args.data_dir, args.steps, args.batch_size, args.mode, args.model
                )
            )
        )
        return
    data_dir = Path(tempfile.mkdtemp(prefix="bench-train-data-")) / "data"
    dataset.build(data_dir, GenerationConfig(n_rows=25_000, chunk_size=5_000, seed=3))
    model = args.model
    if args.spec:
        try:
            spec = models.spec_with(args.spec)
        except models.ModelError as error:
            raise SystemExit(f"--spec {error}") from None
        model = str(models.build_default(data_dir.parent / "variant", spec))
    rounds: dict[str, list[dict]] = {"naive": [], "grouped": []}
    for _ in range(args.rounds):  # interleaved, so a drift in the machine's speed hits both
        for variant in rounds:
            cmd = [sys.executable, __file__, "--child", variant, "--data-dir", str(data_dir)]
            cmd += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
            cmd += ["--mode", args.mode, "--model", model]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rounds[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    results = {  # the median round by tokens/s
        variant: sorted(runs, key=lambda r: r["real_tokens_per_s"])[len(runs) // 2]
        for variant, runs in rounds.items()
    }
    what = f"default model with {', '.join(args.spec)}" if args.spec else args.model
    print(
        f"{what}, mode {args.mode}, {args.steps} steps of batch {args.batch_size}, "
        f"median of {args.rounds} rounds"
    )
    print(f"{'batching':<44}{'real tokens/s':>14}{'padding':>9}{'seconds':>9}{'peak RSS MB':>13}")
    names = {
        "naive": "naive (random rows, pad to longest row)",
        "grouped": "length-grouped, pad per batch",
    }
    for variant, r in results.items():
        print(
            f"{names[variant]:<44}{r['real_tokens_per_s']:>14,.0f}{r['padding_share']:>9.1%}{r['seconds']:>9.1f}{r['peak_rss_mb']:>13.0f}"
        )
    for variant, runs in rounds.items():
        spread = ", ".join(f"{r['real_tokens_per_s']:,.0f}" for r in runs)
        print(f"{variant} rounds, real tokens/s: {spread}")
    ratio = results["grouped"]["real_tokens_per_s"] / results["naive"]["real_tokens_per_s"]
    print(f"length grouping: {ratio:.2f}x the real tokens/s of naive padding")


if __name__ == "__main__":
    main()
