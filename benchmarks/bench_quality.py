"""Quality: train a model for a fixed wall-clock budget, score it on 1,000 test rows.

    python benchmarks/bench_quality.py                      # 10 min budget, 30k train rows
    python benchmarks/bench_quality.py --model gemma-3-270m-gguf   # LoRA, 60 min, a curve
    python benchmarks/bench_quality.py --budget-s 300 --channel-weight 2
    python benchmarks/bench_quality.py --max-steps 1000 --spec value_dims=0   # a model variant
    python benchmarks/bench_quality.py --no-torch-compile --learning-rate 1e-3  # as before

``--max-steps`` trains a fixed number of steps instead of a time budget, so variants can be
compared on a busy machine; ``--spec`` builds a variant of the default model
(``linklm.model.models.DefaultSpec`` fields, e.g. ``num_hidden_layers=6``).

Prints channel top-1 (greedy and ranked), top-3, throughput MAE and invalid answers for the
model, next to the quietest-channel heuristic, the mean and per-bandwidth-mean throughput
and the physics oracle on the same rows. A benchmark, not a test: it takes minutes.

Any other model (``--model gemma-3-270m-gguf``, a folder, a hub id) trains LoRA adapters on
its own prompt (``--prompt``, compact by default) for 60 minutes by default, and prints a
learning curve: the channel accuracy (ranked top-1) on ``--curve-rows`` validation rows every
``--curve-every`` steps, with the training seconds it took to get there (those validations
are not counted in the budget), so a user can see what an hour of CPU buys.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from linklm.config import GenerationConfig, TrainConfig
from linklm.data import dataset
from linklm.evaluation import baselines
from linklm.model import answers as model_answers
from linklm.model import examples, memory, models, training


class TimeBudget(TrainerCallback):
    """Stops training ``seconds`` after it began (preparing the data and the model is not
    in the budget, as the step plan made from the calibration is not)."""

    def __init__(self, seconds: float):
        self.seconds, self.deadline = seconds, float("inf")

    def on_train_begin(self, args, state, control, **kwargs):
        self.deadline = time.perf_counter() + self.seconds

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() >= self.deadline:
            control.should_training_stop = True
        return control


class EvalPause(TrainerCallback):
    """Moves a ``TimeBudget``'s deadline on by each validation's time (a learning curve's
    measurements are not training), and keeps (step, training seconds, metrics) of each."""

    def __init__(self, budget: TimeBudget):
        self.budget, self.curve = budget, []
        self.began = self.step_ended = self.paused = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_ended = time.perf_counter()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        spent = time.perf_counter() - self.step_ended
        self.paused += spent
        self.budget.deadline += spent
        trained = self.step_ended - self.began - (self.paused - spent)
        self.curve.append((state.global_step, trained, dict(metrics or {})))


class StepClock(TrainerCallback):
    """Seconds per step after the first ``skip`` steps (the first ones are slower), and the
    one-off cost of those first steps (a torch.compile happens there)."""

    def __init__(self, skip: int = 10):
        self.skip, self.begin, self.start, self.steps = skip, None, None, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.skip:
            self.start = time.perf_counter()
        elif state.global_step > self.skip:
            self.steps += 1

    def seconds_per_step(self) -> float:
        return (time.perf_counter() - self.start) / max(self.steps, 1)

    def start_up_seconds(self) -> float:
        return max(0.0, self.start - self.begin - self.skip * self.seconds_per_step())


def _step_time(config: TrainConfig, work: Path, probe_steps: int = 40) -> tuple[float, float]:
    """Calibrate on ``probe_steps`` steps (the first quarter not timed), so the LR schedule
    can span the whole budget: (seconds per step, one-off start-up seconds)."""
    probe = config.model_copy(update={"max_steps": probe_steps, "warmup_steps": 0, "eval_rows": 0})
    clock = StepClock(skip=max(1, probe_steps // 4))
    training.build_trainer(
        probe, training.prepare(probe), work / "calibrate", callbacks=[clock]
    ).train()
    return clock.seconds_per_step(), clock.start_up_seconds()


def _train_for(
    config: TrainConfig,
    budget_s: float,
    work: Path,
    max_steps: int = 0,
    probe_steps: int = 40,
    curve_rows=None,
):
    """Calibrate the step time, then train for ``budget_s`` with the schedule spanning it
    (or, with ``max_steps``, train exactly that many steps). Returns the trainer, its
    prepared data, the seconds of that training alone (no calibration, no preparing, no
    validations) and the learning curve (``curve_rows``: validation rows the channel
    accuracy is measured on every ``config.eval_steps``)."""
    pause = None
    if max_steps:
        steps, callbacks = max_steps, []
    else:
        per_step, start_up = _step_time(config, work, probe_steps)
        # 10 % margin: 40 calibration steps ran faster than a long run (runs without it
        # were stopped at 88-93 % of their schedule, before the learning rate had decayed)
        steps = max(50, int(0.9 * (budget_s - start_up) / per_step))
        print(
            f"calibrated: {per_step * 1000:.0f} ms/step, {start_up:.0f} s start-up -> {steps} steps"
        )
        budget = TimeBudget(budget_s)
        pause = EvalPause(budget)
        callbacks = [budget, pause]
    config = config.model_copy(update={"max_steps": steps, "warmup_steps": min(100, steps // 10)})
    prepared = training.prepare(config)  # fresh weights: calibration trained the first copy
    if curve_rows is not None:
        prepared.accuracy_rows = curve_rows
    trainer = training.build_trainer(config, prepared, work / config.run_name, callbacks=callbacks)
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began - (pause.paused if pause else 0.0)
    return trainer, prepared, seconds, (pause.curve if pause else [])


def _build_variant(changes: list[str], folder: Path) -> Path:
    """The default model built from a DefaultSpec with the given fields changed."""
    try:
        spec = models.spec_with(changes)
    except models.ModelError as error:
        raise SystemExit(f"--spec {error}") from None
    print(f"model variant: {spec}")
    return models.build_default(folder, spec)


def _print_curve(curve: list) -> None:
    """The learning curve: channel accuracy and val loss by step and training minutes."""
    if not curve:
        return
    print("learning curve (validation rows; minutes of training, validations not counted):")
    print(f"{'step':>6}{'minutes':>9}{'val loss':>10}{'channel top-1':>15}")
    for step, seconds, metrics in curve:
        acc = metrics.get("eval_channel_accuracy")
        print(
            f"{step:>6}{seconds / 60:>9.1f}{metrics.get('eval_loss', float('nan')):>10.4f}"
            + (f"{acc:>15.1%}" if acc is not None else f"{'':>15}")
        )


def _ranked_top1(ranked: list) -> np.ndarray:
    """The best-ranked channel of each row of ``answers.rank_channels``."""
    return np.array([r[0][0] for r in ranked])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model",
        default=models.DEFAULT_MODEL,
        help="the default model (full fine-tune), or any other (gemma-3-270m-gguf, a folder, "
        "a hub id: LoRA on its own prompt)",
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        help="training wall-clock budget (default 10 for the default model, 60 for others)",
    )
    parser.add_argument("--budget-s", type=float, help="the budget in seconds (overrides)")
    parser.add_argument("--prompt", default="auto", help="auto, text, compact, number-tokens")
    parser.add_argument("--train-rows", type=int, default=30_000)
    parser.add_argument("--test-rows", type=int, default=1_000)
    parser.add_argument("--channel-weight", type=float, default=1.0)
    parser.add_argument("--throughput-weight", type=float, default=1.0)
    parser.add_argument("--target", default="both")
    parser.add_argument(
        "--learning-rate", type=float, help="default 2e-3 (default model), 1e-3 (LoRA)"
    )
    parser.add_argument("--batch-size", type=int, help="default: the model's (32; Gemma 8)")
    parser.add_argument(
        "--curve-every",
        type=int,
        help="steps between learning-curve points (default: none for the default model, "
        "60 for others)",
    )
    parser.add_argument("--curve-rows", type=int, default=100)
    parser.add_argument(
        "--seen-rows",
        type=int,
        help="training rows scored to compare with the test rows (default: --test-rows for "
        "the default model, 200 for others)",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (weights, order)")
    parser.add_argument(
        "--weight-decay",
        type=float,
        help="AdamW weight decay (greedy top-1, seed 1: 0 gave 87.5 %%, 0.1 89.4 %%, 0.3 "
        "92.8 %%; seed 0: 0 gave 90.7 %%, 0.3 88.9 %%); default 0.3, LoRA 0",
    )
    parser.add_argument(
        "--torch-compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the model (1.6x more steps in the budget on this CPU for the "
        "default model, its default; off for others)",
    )
    parser.add_argument(
        "--augment-copies",
        type=int,
        default=TrainConfig.model_fields["augment_copies"].default,
        help="label-preserving variants per training row (linklm.data.augment)",
    )
    parser.add_argument(
        "--augment-keep", type=float, default=TrainConfig.model_fields["augment_keep"].default
    )
    parser.add_argument(
        "--shift-copies",
        type=int,
        default=TrainConfig.model_fields["shift_copies"].default,
        help="variants per training row with the whole scan louder (linklm.data.augment)",
    )
    parser.add_argument("--data-dir", type=Path, help="reuse a dataset folder")
    parser.add_argument("--keep", type=Path, help="save the trained run (model, history) here")
    parser.add_argument("--max-steps", type=int, default=0, help="fixed steps, no time budget")
    parser.add_argument(
        "--spec",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a DefaultSpec field of the model variant to build (repeatable)",
    )
    parser.add_argument(
        "--channel-stage-s",
        type=float,
        default=0.0,
        help="staged training: the first this many seconds of the budget train the channel "
        "alone, the rest continues from those weights on the full answer",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    default = args.model == models.DEFAULT_MODEL
    budget_s = args.budget_s or 60 * (args.budget_minutes or (10 if default else 60))
    curve_every = args.curve_every if args.curve_every is not None else (0 if default else 60)
    seen_rows = args.seen_rows or (args.test_rows if default else 200)
    kind = "text" if args.prompt == "text" else "compact"
    batch_size = memory.default_batch_size(args.model, kind, torch.cuda.is_available())

    work = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    model = args.model
    if args.spec:
        model = str(_build_variant(args.spec, work / "variant"))
    data_dir = args.data_dir or work / "data"
    if not (data_dir / "manifest.json").exists():  # build once, reuse with --data-dir
        dataset.build(
            data_dir,
            GenerationConfig(n_rows=int(args.train_rows / 0.8) + 2000, chunk_size=10_000, seed=1),
        )
    curve_rows = (
        examples.split_rows(data_dir, "validation", args.curve_rows) if curve_every else None
    )
    config = TrainConfig(
        data_dir=data_dir,
        model=model,
        mode="full" if default else "lora",
        prompt=args.prompt,
        out_dir=work,
        run_name="quality",
        target=args.target,
        max_rows=args.train_rows,
        augment_copies=args.augment_copies,
        augment_keep=args.augment_keep,
        shift_copies=args.shift_copies,
        eval_rows=args.curve_rows if curve_every else 0,
        eval_steps=curve_every or 200,
        batch_size=args.batch_size or batch_size,
        learning_rate=args.learning_rate or (2e-3 if default else 1e-3),
        weight_decay=args.weight_decay
        if args.weight_decay is not None
        else (0.3 if default else 0.0),
        seed=args.seed,
        torch_compile=args.torch_compile if args.torch_compile is not None else default,
        channel_weight=args.channel_weight,
        throughput_weight=args.throughput_weight,
        save_steps=10**9,
        logging_steps=100 if default else 10,
    )
    probe_steps = 40 if default else 12
    started = time.perf_counter()
    stage_s = min(args.channel_stage_s, budget_s)
    if stage_s > 0:  # stage 1: the channel alone, saved, then the full answer from there
        first = config.model_copy(update={"target": "channel", "run_name": "stage1"})
        trainer, prepared, first_s, _ = _train_for(first, stage_s, work, 0, probe_steps)
        training.save_run(first, prepared, trainer, first_s)  # into work/stage1
        config = config.model_copy(update={"model": str(work / "stage1" / "model")})
    trainer, prepared, train_s, curve = _train_for(
        config, budget_s - stage_s, work, args.max_steps, probe_steps, curve_rows
    )
    seconds = time.perf_counter() - started
    tokens = trainer.state.num_input_tokens_seen
    if args.keep:
        kept = config.model_copy(update={"out_dir": args.keep.parent, "run_name": args.keep.name})
        training.save_run(kept, prepared, trainer, train_s)

    test = examples.split_rows(data_dir, "test", args.test_rows)
    train_rows = examples.split_rows(data_dir, "train", args.train_rows)
    truth_ch = test["recommended_channel_mhz"].to_numpy()
    truth_tp = test["expected_throughput_mbps"].to_numpy()
    model, tok, fmt = trainer.model, prepared.tokenizer, prepared.prompt_format
    scoring = time.perf_counter()
    answers = model_answers.generate(model, tok, fmt, test)
    ranked = model_answers.rank_channels(model, tok, fmt, test)
    scored_s = time.perf_counter() - scoring
    top1 = _ranked_top1(ranked)
    top3 = np.array([t in [c for c, _ in r[:3]] for t, r in zip(truth_ch, ranked, strict=True)])
    # the model's throughput error over the rows it answered, as the evaluation flow's
    answered = answers.valid & ~np.isnan(answers.throughput)

    def mae(pred, rows=slice(None)):
        return float(np.mean(np.abs(pred[rows] - truth_tp[rows]))) if pred[rows].size else np.nan

    print(
        (f"stage 1: channel alone for {stage_s:.0f} s; stage 2: " if stage_s > 0 else "")
        + f"trained {trainer.state.global_step} steps in {train_s:.0f} s ({tokens / train_s:,.0f} "
        f"tokens/s; {seconds:.0f} s in all with preparing and calibrating), "
        f"{len(prepared.train_set)} train examples ({args.train_rows} rows, "
        f"{args.augment_copies} + {args.shift_copies} augmented copies each), target {args.target}, weights channel {args.channel_weight} "
        f"throughput {args.throughput_weight}; {len(test)} test rows"
    )
    lengths = np.array(prepared.train_set["length"][:])
    print(
        f"model {args.model} ({config.mode}), prompt {args.prompt} ({fmt.kind}): "
        f"{np.median(lengths):.0f} tokens a training row (median; {lengths.min()}-"
        f"{lengths.max()}), batch {config.batch_size}, learning rate {config.learning_rate}; "
        f"answers scored in {scored_s:.0f} s; e.g. {answers.raw[:2]}"
    )
    _print_curve(curve)
    print(
        f"{'method':<34}{'greedy top-1':>13}{'ranked top-1':>13}{'top-3':>8}{'tput MAE':>10}{'invalid':>9}"
    )
    name = "default model" if default else args.model[:34]
    model_ch_acc = np.mean(answers.channel == truth_ch)
    tput_mae = mae(answers.throughput, answered) if args.target != "channel" else float("nan")
    print(
        f"{name:<34}{model_ch_acc:>13.1%}{np.mean(top1 == truth_ch):>13.1%}{top3.mean():>8.1%}"
        f"{tput_mae:>10.2f}{1 - answers.valid.mean():>9.1%}"
    )
    if args.target != "channel" and answered.mean() < 1:
        print(f"  (its throughput MAE is over the {answered.mean():.1%} of rows it answered)")
    print(
        f"{'quietest channel (heuristic)':<34}{np.mean(baselines.quietest_channel(test) == truth_ch):>13.1%}"
    )
    print(
        f"{'random available channel':<34}{np.mean(baselines.random_channel(test) == truth_ch):>13.1%}"
    )
    print(
        f"{'mean throughput':<34}{'':>13}{'':>13}{'':>8}{mae(baselines.mean_throughput(train_rows, test)):>10.2f}"
    )
    print(
        f"{'per-bandwidth mean throughput':<34}{'':>13}{'':>13}{'':>8}"
        f"{mae(baselines.per_bandwidth_mean_throughput(train_rows, test)):>10.2f}"
    )
    # The same model on rows it trained on: a wide gap to the test rows says the 30k rows
    # are being memorised (more data or regularisation would help), a narrow one that the
    # model has not learnt the rule yet (more steps or capacity would).
    seen = train_rows.head(seen_rows)
    seen_top1 = _ranked_top1(model_answers.rank_channels(model, tok, fmt, seen))
    seen_acc = np.mean(seen_top1 == seen["recommended_channel_mhz"].to_numpy())
    print(f"{'  ... on ' + str(len(seen)) + ' training rows':<34}{'':>13}{seen_acc:>13.1%}")
    oracle_ch, oracle_tp = baselines.oracle(test)
    print(
        f"{'physics oracle (ceiling)':<34}{np.mean(oracle_ch == truth_ch):>13.1%}{'':>13}{'':>8}{mae(oracle_tp):>10.3f}"
    )


if __name__ == "__main__":
    main()
