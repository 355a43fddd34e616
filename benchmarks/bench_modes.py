"""Training modes side by side: tokens/s, peak memory and validation loss per mode.

    python benchmarks/bench_modes.py                                  # default model, full and lora
    python benchmarks/bench_modes.py --model gemma-3-270m-gguf --modes full,lora --steps 4 \
        --batch-size 4 --eval-rows 8 --learning-rate 2e-4             # Gemma on the CPU: minutes
    python benchmarks/bench_modes.py --model gemma-3-270m-gguf --modes full,lora,qlora \
        --steps 300 --bf16 --learning-rate 2e-4                       # a GPU worker

Each mode trains the same model on the same rows with the same settings, in its own
process, so peak memory is the mode's own: resident memory everywhere, and on CUDA the peak
GPU memory torch allocated while training. Figures come from the run's ``run.json`` (what
``flows.train`` writes for any run): real (non-padding) training tokens per second, first
and last training loss and the validation loss at the end. A mode that cannot run on this
machine (qlora without CUDA) is listed with the reason, the one-line error a user gets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import get_args

from linklm.config import GenerationConfig, Mode, TrainConfig
from linklm.data import dataset
from linklm.errors import LinkLMError
from linklm.model import training


def run_mode(args: argparse.Namespace, mode: str) -> dict:
    """One training run; its summary, or the reason it cannot run here."""
    work = Path(tempfile.mkdtemp(prefix=f"bench-modes-{mode}-"))
    config = TrainConfig(
        data_dir=args.data_dir,
        out_dir=work,
        run_name=mode,
        model=args.model,
        mode=mode,
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=min(100, args.steps // 10),
        eval_rows=args.eval_rows,
        eval_steps=args.steps,  # one validation pass, at the end
        save_steps=10**9,
        logging_steps=max(1, args.steps // 10),
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        max_rows=args.max_rows,
    )
    try:
        return training.train(config)
    except LinkLMError as error:
        return {"error": str(error)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="linklm-default")
    parser.add_argument("--modes", default="full,lora,qlora", help="comma-separated")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--eval-rows", type=int, default=500)
    parser.add_argument("--max-rows", type=int, default=20_000)
    parser.add_argument("--bf16", action="store_true", help="mixed precision (GPU)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--data-dir", type=Path, help="reuse a dataset folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_mode(args, args.child)))
        return
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in get_args(Mode)]
    if unknown:
        parser.error(
            f"--modes: unknown {', '.join(unknown)} (choose from {', '.join(get_args(Mode))})"
        )
    if args.data_dir is None:
        args.data_dir = Path(tempfile.mkdtemp(prefix="bench-modes-data-")) / "data"
        dataset.build(args.data_dir, GenerationConfig(n_rows=25_000, chunk_size=5_000, seed=3))
    results = {}
    for mode in modes:
        cmd = [sys.executable, __file__, "--child", mode, "--data-dir", str(args.data_dir)]
        for flag in ("model", "steps", "batch_size", "learning_rate", "eval_rows", "max_rows"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        cmd += ["--bf16"] if args.bf16 else []
        cmd += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    precision = "bf16 mixed" if args.bf16 else "fp32"
    precision += ", gradient checkpointing" if args.gradient_checkpointing else ""
    print(
        f"{args.model}, {args.steps} steps of batch {args.batch_size}, learning rate "
        f"{args.learning_rate}, {precision}, validation on {args.eval_rows} rows"
    )
    widths = (7, 12, 10, 13, 13, 18, 10)
    # seconds of training alone, the span tokens/s is over (validation passes apart)
    header = ("mode", "tokens/s", "train s", "peak RSS MB", "peak GPU MB", "train loss", "val loss")
    print(
        "".join(
            f"{h:>{w}}" if i else f"{h:<{w}}"
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    for mode, r in results.items():
        if "error" in r:
            print(f"{mode:<7}cannot run here: {r['error']}")
            continue
        peak = r["peak_memory_mb"]
        cells = (
            f"{r['tokens_per_second']:,.0f}",
            f"{r['train_seconds'] - r['eval_seconds']:.1f}",
            f"{peak['rss']:,.0f}",
            "—" if peak["gpu"] is None else f"{peak['gpu']:,.0f}",
            f"{r['first_train_loss']:.3f} -> {r['final_train_loss']:.3f}",
            "—" if r["final_eval_loss"] is None else f"{r['final_eval_loss']:.4f}",
        )
        print(f"{mode:<7}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths[1:], strict=True)))


if __name__ == "__main__":
    main()
