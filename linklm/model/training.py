"""Fine-tuning: full, LoRA and QLoRA on transformers' Trainer + peft, with resume and dry-run.

``train(config)`` reads the train and validation splits of a dataset folder, renders them
with the model's prompt format, and trains with the loss on the answer tokens only (the
channel and throughput tokens can be weighted). Batches are left-padded so the answer is
always at the end, which lets the model compute logits for the answer positions only, and
rows of similar length are batched together. The run folder gets the model (merged
weights for LoRA and QLoRA, plus the adapter), the tokenizer and prompt format, the
resolved config, the dataset's SHA256, library and git versions, and the loss history.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainerState, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

import linklm
from linklm import atomic, store
from linklm.config import TrainConfig
from linklm.data import augment, dataset
from linklm.errors import LinkLMError, StorageError, first_line
from linklm.model import best, ddp, examples, formats, memory, models, reporting, runs, vocab
from linklm.model.runs import (
    CHECKPOINTS,
    CONFIG_FILE,
    DATASET_KEY,
    HISTORY_FILE,
    RUN_FILE,
    TRAINER_STATE,
    TrainingError,
    check_run_dir,
    last_checkpoint,
    resumed,
    run_dir_of,
    run_lock,
)

log = logging.getLogger(__name__)


def check_qlora_possible() -> None:
    """QLoRA needs CUDA and bitsandbytes; on CPU its 4-bit gradients were measured wrong."""
    if not torch.cuda.is_available():
        raise TrainingError(
            "mode qlora needs a CUDA GPU (4-bit NF4 via bitsandbytes) and this machine has none; "
            "use mode lora or full here, or run on a GPU worker with `pip install '.[gpu]'`"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TrainingError("mode qlora needs bitsandbytes: pip install '.[gpu]'") from None


def check_hardware(config: TrainConfig) -> None:
    """What the settings need from the machine: QLoRA and fp16 a CUDA GPU. On the CPU the
    Trainer runs an fp16 run in float32 and would still record fp16: refused instead."""
    if config.mode == "qlora":
        check_qlora_possible()
    if config.fp16 and not torch.cuda.is_available():
        raise TrainingError(
            "fp16 needs a CUDA GPU and this machine has none (on the CPU the Trainer would "
            "train in float32); use bf16 or neither here"
        )


class AnswerLossTrainer(Trainer):
    """Cross-entropy on the answer tokens only, from logits of the answer positions only."""

    def __init__(
        self,
        *args,
        token_weights: torch.Tensor | None = None,
        accuracy_rows: pl.DataFrame | None = None,
        prompt_format=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.token_weights = token_weights
        self.loss_is_scaled_for_ga = False  # a per-batch mean: let Trainer divide by GA steps
        self.accuracy_rows, self.prompt_format = accuracy_rows, prompt_format

    def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
        """The validation loss, plus the channel accuracy on ``accuracy_rows`` when it is the
        best-run metric: added here, it is logged with the loss and seen by early stopping."""
        output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        if self.accuracy_rows is not None:
            output.metrics[f"{metric_key_prefix}_{best.ACCURACY}"] = best.channel_accuracy(
                self.model,
                self.processing_class,
                self.prompt_format,
                self.accuracy_rows,
                self.args.per_device_eval_batch_size,
            )
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        span = int((labels != -100).sum(dim=1).max())
        outputs = model(**inputs, logits_to_keep=span + 1)
        logits = outputs.logits[:, :-1, :].float()
        target = labels[:, -span:]
        ce = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)),
            target.reshape(-1),
            ignore_index=-100,
            reduction="none",
        )
        ce = ce.view_as(target)
        counted = target != -100
        weight = counted.float()
        if self.token_weights is not None:
            weight = weight * self.token_weights.to(ce.device)[target.clamp(min=0)]
        loss = (ce * weight).sum() / counted.sum().clamp(min=1)
        return (loss, outputs) if return_outputs else loss

    def _get_train_sampler(self, train_dataset=None):
        # Trainer hands the length-grouped sampler ``dataset["length"]``, which datasets 4+
        # returns as a lazy Column read one row at a time: 2.9 s per pass over 24k rows where
        # a plain list takes 0.46 s. Same lengths, same order, so results do not change.
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler) and not isinstance(sampler.lengths, list):
            sampler.lengths = sampler.lengths[:]
        return sampler


def token_weights(tokenizer, config: TrainConfig, kind: str = "numtok-v1") -> torch.Tensor | None:
    """Per-token loss weights for number-token answers (channel vs throughput tokens).

    Only a number-token vocabulary has one token per channel (``c5180``) and throughput bin
    (``q120``); a subword vocabulary spreads numbers over digit pieces, so weighting by
    spelling there would hit unrelated tokens. It is refused instead.
    """
    if config.channel_weight == 1.0 and config.throughput_weight == 1.0:
        return None
    if kind != "numtok-v1":
        raise TrainingError(
            "channel_weight/throughput_weight need a number-token model (linklm-default); "
            f"this model's prompt format is {kind!r}"
        )
    weights = torch.ones(len(tokenizer))
    for token, idx in tokenizer.get_vocab().items():
        if token[:1] == "c" and token[1:].isdigit():
            weights[idx] = config.channel_weight
        elif token[:1] == "q" and token[1:].isdigit():
            weights[idx] = config.throughput_weight
    return weights


class ProgressLog(TrainerCallback):
    """Step, loss and tokens/s in the log (a Prefect flow shows it in the run's logs).

    It counts from the start of this session's training: a resumed run's state already holds
    the tokens of the steps before the checkpoint, which this session did not spend time on.
    The validation passes' seconds are counted apart, so tokens/s is training's alone. Peak
    memory is read when training ends, before the save loads a float base for the merged
    export (on Gemma 3 270M that would add a gigabyte of float32 weights to a LoRA's figure)."""

    def __init__(self):
        self.started = time.perf_counter()
        self.tokens_at_start = 0
        self.eval_seconds = 0.0
        self.peak_memory: dict[str, float | None] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()
        self.tokens_at_start = state.num_input_tokens_seen or 0
        self.eval_seconds = 0.0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.eval_seconds += (metrics or {}).get("eval_runtime", 0.0)

    def on_train_end(self, args, state, control, **kwargs):
        self.peak_memory = peak_memory_mb()

    def session_tokens(self, state) -> int:
        """Training tokens this session has seen (not the resumed steps')."""
        return (state.num_input_tokens_seen or 0) - self.tokens_at_start

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:  # one progress line per step, not one per rank
            return
        logs = logs or {}
        # a validation pass logs before on_evaluate counts its seconds: take them off here
        pending_eval = logs.get("eval_runtime", 0.0)
        seconds = max(time.perf_counter() - self.started - self.eval_seconds - pending_eval, 1e-9)
        tokens = self.session_tokens(state)
        parts = [f"step {state.global_step}/{state.max_steps}"]
        parts += [f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "eval_loss")]
        if tokens:
            parts.append(f"{tokens / seconds:,.0f} tokens/s")
        log.info(", ".join(parts))


class StopWhenDiverged(TrainerCallback):
    """A training or validation loss that is NaN or infinite ends the run with an error
    naming the step and the setting to change: a diverged run's weights answer nothing, and
    a run saved from them would report success."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for name in ("loss", "eval_loss"):
            value = (logs or {}).get(name)
            if value is not None and not math.isfinite(value):
                raise TrainingError(
                    f"step {state.global_step}: the {name.replace('_', ' ')} is {value}, so "
                    f"training diverged; lower learning_rate (now {args.learning_rate:g}, "
                    "--learning-rate) or the loss weights, and train again"
                )


class SaveSettings(TrainerCallback):
    """Writes train_config.json (a resume's merged settings and the dataset's SHA256) once
    the Trainer has loaded the checkpoint and before the first step: a later resume
    continues with them, and a resume that fails to load leaves the file as it was."""

    def __init__(self, path: Path, settings: dict):
        self.path, self.settings = path, settings

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            atomic.write_json(self.path, self.settings)


class SavePromptFormat(TrainerCallback):
    """Each checkpoint gets the run's prompt format, so a checkpoint folder can be evaluated
    or served as it is (a number-token model read as text would answer nonsense)."""

    def __init__(self, prompt_format):
        self.prompt_format = prompt_format

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.prompt_format.save(folder)


class CheckpointsToStore(TrainerCallback):
    """Copies each checkpoint, and the run's settings, to ``runs/<run>/checkpoints/`` of the
    store as it is saved, and removes there the ones the Trainer rotated out here: the same
    run started on another worker resumes from the newest (``runs.from_store``). Rank 0
    only; the checkpoint's index is written last, so a copy cut short is never taken."""

    def __init__(self, run_dir: Path, remote: str):
        self.run_dir, self.remote = run_dir, remote

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        name = f"checkpoint-{state.global_step}"
        run_url = self.remote.rsplit("/", 1)[0]
        store.publish_file(self.run_dir / CONFIG_FILE, store.join(run_url, CONFIG_FILE))
        store.publish_folder(self.run_dir / CHECKPOINTS / name, store.join(self.remote, name), ())
        kept = {p.name for p in (self.run_dir / CHECKPOINTS).glob("checkpoint-*")}
        fs, root = store.filesystem(self.remote)
        for entry in fs.ls(root, detail=False):
            old = entry.rstrip("/").rsplit("/", 1)[-1]
            if old.startswith("checkpoint-") and old not in kept:
                store.remove(store.join(self.remote, old))
        log.info("checkpoint %s copied to %s", name, self.remote)


@dataclass
class Prepared:
    model: torch.nn.Module
    tokenizer: object
    prompt_format: object
    train_set: object
    eval_set: object | None
    manifest: dict
    source: str
    split: dict  # examples.split_record: the split trained on, recorded in run.json
    accuracy_rows: pl.DataFrame | None = None  # best.accuracy_rows: the best-run metric's
    mix: list[dict] = field(default_factory=list)  # examples.mixed_rows: folders mixed in


def qlora_compute_dtype(config: TrainConfig, native_bf16: bool | None = None) -> torch.dtype:
    """The dtype the 4-bit layers compute in: the run's precision flag, else the GPU's best.

    ``--fp16`` and ``--bf16`` decide it, so the adapters and the base compute alike. With
    neither, bfloat16 where the GPU has it natively (Ampere and later) and float16 before
    (a Colab T4, where torch emulates bfloat16 slowly). ``native_bf16`` overrides the probe."""
    if config.fp16:
        return torch.float16
    if config.bf16:
        return torch.bfloat16
    if native_bf16 is None:
        native_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported(
            including_emulation=False
        )
    return torch.bfloat16 if native_bf16 else torch.float16


def _apply_adapters(model, config: TrainConfig, new_tokens: list[int] = ()):
    """LoRA adapters on ``config.lora_targets``, initialised from ``config.seed``: the
    Trainer seeds only after it gets the model, and an unseeded adapter differs per run.
    ``new_tokens`` (ids added to the vocabulary) train their embedding rows too."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = [t for t in config.lora_targets if t not in names]
    if unknown:
        linear = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear)
            }
        )
        raise TrainingError(
            f"LoRA target modules {unknown} do not exist in {config.model}; its linear "
            f"layers are {linear}"
        )
    targets = list(config.lora_targets)
    set_seed(config.seed)
    if config.mode == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        trainable_token_indices=list(new_tokens) or None,
    )
    return get_peft_model(model, lora)


def prepare(config: TrainConfig, token: str | None = None) -> Prepared:
    """Dataset, model (with adapters for LoRA/QLoRA) and tokenised splits."""
    manifest = dataset.require_intact(config.data_dir)
    quantization = None
    dtype = torch.float32
    if config.mode == "qlora":
        from transformers import BitsAndBytesConfig

        compute_dtype = qlora_compute_dtype(config)
        log.info("qlora: 4-bit NF4 base computing in %s", compute_dtype)
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=True,
        )
    loaded = models.load(config.model, dtype=dtype, token=token, quantization_config=quantization)
    prompt_format = formats.choose(config.prompt, models.saved_format(loaded), config.target)
    if prompt_format.kind == "text" and vocab.has_number_tokens(loaded.tokenizer):
        raise TrainingError(
            f"{config.model}: a number-token model cannot read the text prompt; drop --prompt "
            "text (its own format is the compact one)"
        )
    model = loaded.model
    new_tokens = []
    if config.prompt == "number-tokens":
        new_tokens = vocab.add_number_tokens(model, loaded.tokenizer)
    if config.mode in ("lora", "qlora"):
        model = _apply_adapters(model, config, new_tokens)
    train_rows = examples.split_rows(config.data_dir, "train", config.max_rows, manifest)
    if train_rows.height == 0:
        raise TrainingError(f"{config.data_dir}: the train split is empty")
    train_rows, mixed = examples.mixed_rows(train_rows, config.mix_sources, config.seed)
    train_rows = augment.shift_scan_levels(
        train_rows, config.shift_copies, seed=config.seed, max_shift_db=config.shift_max_db
    )
    train_rows = augment.drop_losing_channels(
        train_rows, config.augment_copies, seed=config.seed, keep=config.augment_keep
    )
    train_set = examples.tokenize(train_rows, prompt_format, loaded.tokenizer)
    eval_set = eval_rows = None
    if config.eval_rows:
        eval_rows = examples.split_rows(config.data_dir, "validation", config.eval_rows, manifest)
        if eval_rows.height:
            eval_set = examples.tokenize(eval_rows, prompt_format, loaded.tokenizer)
        else:
            log.warning("%s: the validation split is empty, no validation loss", config.data_dir)
            eval_rows = None
        if eval_rows is None and best.judged(config):
            raise TrainingError(
                f"{config.data_dir}: the validation split is empty, so there is no best run to "
                "keep; drop --load-best/--early-stopping-patience or use a dataset with one"
            )
    try:
        estimate = memory.check(config, model, train_set, _answer_tokens(train_set))
    except MemoryError as error:
        raise TrainingError(str(error)) from None
    log.info(
        "batch %d: estimated peak %.1f GB of the machine's %.1f GB of %s",
        memory.batch_size(config),
        estimate.peak_bytes / memory.GB,
        estimate.available_bytes / memory.GB,
        estimate.where,
    )
    return Prepared(
        model,
        loaded.tokenizer,
        prompt_format,
        train_set,
        eval_set,
        manifest,
        loaded.source,
        examples.split_record(config.data_dir, manifest),
        best.accuracy_rows(config, eval_rows),
        mixed,
    )


def _answer_tokens(train_set) -> int:
    """The longest answer (label) span of the training rows: the positions whose logits a
    step computes."""
    sample = train_set.select(range(min(len(train_set), 256)))["labels"]
    return max((sum(1 for t in labels if t != -100) for labels in sample), default=0)


def training_arguments(
    config: TrainConfig, run_dir: Path, evaluate: bool = True
) -> TrainingArguments:
    """The Trainer's settings; ``evaluate`` is off when there are no validation rows."""
    settings = dict(
        output_dir=str(run_dir / CHECKPOINTS),
        per_device_train_batch_size=memory.batch_size(config),
        per_device_eval_batch_size=memory.batch_size(config),
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.bf16,
        fp16=config.fp16,
        activation_checkpointing=config.gradient_checkpointing,
        torch_compile=config.torch_compile,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        length_column_name="length",
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if evaluate and config.eval_rows else "no",
        eval_steps=config.eval_steps,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        prediction_loss_only=True,
        remove_unused_columns=False,
        logging_nan_inf_filter=False,  # a NaN loss is logged as NaN: StopWhenDiverged sees it
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        # under torchrun (ddp.launch): gloo on the CPU, NCCL on GPUs
        ddp_backend=("nccl" if torch.cuda.is_available() else "gloo")
        if config.distributed
        else None,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
    )
    settings |= reporting.trainer_arguments(config)
    if evaluate:
        settings |= best.trainer_arguments(config)
    return one_gpu_unless_distributed(TrainingArguments(**settings), config.distributed)


def one_gpu_unless_distributed(args, distributed: bool):
    """Several GPUs visible to one process: the Trainer would wrap the model in
    ``DataParallel`` without a word (slower than DDP, and not what was asked). Train on
    the first GPU and say how to use them all; under torchrun each rank has its own."""
    if not distributed and args.n_gpu > 1:
        log.warning(
            "%d GPUs visible: training on cuda:0 only; --nproc-per-node %d trains on all of "
            "them (DDP)",
            args.n_gpu,
            args.n_gpu,
        )
        args._n_gpu = 1
    return args


def build_trainer(
    config: TrainConfig, prepared: Prepared, run_dir: Path, callbacks=()
) -> AnswerLossTrainer:
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    progress = ProgressLog()
    trainer = AnswerLossTrainer(
        model=prepared.model,
        args=training_arguments(config, run_dir, evaluate=prepared.eval_set is not None),
        train_dataset=prepared.train_set,
        eval_dataset=prepared.eval_set,
        data_collator=examples.LeftPadCollator(prepared.tokenizer.pad_token_id),
        processing_class=prepared.tokenizer,
        callbacks=[
            progress,
            StopWhenDiverged(),
            SavePromptFormat(prepared.prompt_format),
            *best.callbacks(config),
            *reporting.callbacks(config, run_dir),
            *callbacks,
        ],
        token_weights=token_weights(prepared.tokenizer, config, prepared.prompt_format.kind),
        accuracy_rows=prepared.accuracy_rows,
        prompt_format=prepared.prompt_format,
    )
    trainer.remove_callback(PrinterCallback)  # ProgressLog says the same through logging
    trainer.progress = progress  # save_run's tokens/s
    return trainer


def dry_run(config: TrainConfig, prepared: Prepared) -> float:
    """One forward/backward on one batch: proves data, model and trainer fit together.
    The trainer's output folder is temporary: a dry run leaves nothing behind."""
    with tempfile.TemporaryDirectory(prefix="linklm-dry-run-") as scratch:
        trainer = build_trainer(config, prepared, Path(scratch))
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        trainer.model.zero_grad(set_to_none=True)
    return float(loss.detach())


def _git_version() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def peak_memory_mb() -> dict[str, float | None]:
    """Peak resident memory of this process so far and, on CUDA, the peak GPU memory torch
    allocated since ``fit`` reset it: the figures that decide which mode fits a machine."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes there, KiB on Linux
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"rss": round(rss_mb, 1), "gpu": round(gpu_mb, 1) if gpu_mb is not None else None}


def versions() -> dict[str, str | None]:
    import datasets
    import peft
    import transformers

    return {
        "linklm": linklm.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "datasets": datasets.__version__,
        "git": _git_version(),
    }


def merged_into_float_base(source: str, adapter_dir: Path, token: str | None = None):
    """A saved adapter merged into its base, loaded afresh in float32: a plain checkpoint.

    The trained model is left alone (peft's in-place merge would leave the save task nothing
    to save again on a retry). For QLoRA the base is float32, not the 4-bit weights (a merge
    into them re-quantises them), so the export loads anywhere without bitsandbytes; it
    differs from the trained model (4-bit base plus adapter) by the base's quantisation
    error. Measured once on the CPU (the QLoRA test's run, bitsandbytes 0.50): logits 0.062
    from the trained model's (mean absolute), a merge into the 4-bit weights 0.078, the
    adapter's own effect 0.35."""
    from peft import PeftModel

    base = models.load(source, dtype=torch.float32, token=token).model
    vocab.fit_embeddings(base, adapter_dir)
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def save_run(
    config: TrainConfig,
    prepared: Prepared,
    trainer: AnswerLossTrainer,
    seconds: float,
    token: str | None = None,
) -> dict:
    """Model (merged for LoRA and QLoRA), adapter, tokenizer, prompt format, run.json and
    history.json, into the run's folder. ``token`` reloads a hub base for the merge."""
    with disk_full_named(run_dir_of(config), "the trained model"):
        return _save_run(config, prepared, trainer, seconds, token)


def _save_run(
    config: TrainConfig,
    prepared: Prepared,
    trainer: AnswerLossTrainer,
    seconds: float,
    token: str | None,
) -> dict:
    run_dir = run_dir_of(config)
    model = trainer.model
    broken = models.non_finite_weight(model)
    if broken is not None:
        raise TrainingError(
            f"{run_dir}: weight {broken} holds NaN or infinite values after step "
            f"{trainer.state.global_step}, so training diverged; nothing was saved; lower "
            f"learning_rate (now {config.learning_rate:g}, --learning-rate) and train again"
        )
    model_dir = run_dir / "model"
    with atomic.atomic_dir(model_dir) as tmp:
        if config.mode in ("lora", "qlora"):
            with atomic.atomic_dir(run_dir / "adapter") as adapter_tmp:
                model.save_pretrained(adapter_tmp)
                prepared.tokenizer.save_pretrained(adapter_tmp)
                prepared.prompt_format.save(adapter_tmp)
            model = merged_into_float_base(prepared.source, run_dir / "adapter", token)
        model.save_pretrained(tmp)
        prepared.tokenizer.save_pretrained(tmp)
        prepared.prompt_format.save(tmp)
    history = trainer.state.log_history
    atomic.write_json(run_dir / HISTORY_FILE, history)
    train_losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    tokens = trainer.progress.session_tokens(trainer.state)
    eval_seconds = trainer.progress.eval_seconds
    train_only = seconds - eval_seconds  # tokens/s of training, without the validation passes
    summary = {
        "run_dir": str(run_dir),
        "model_dir": str(model_dir),
        "config": config.model_dump(mode="json"),
        "base_model": prepared.source,
        "dataset_sha256": prepared.manifest["dataset_sha256"],
        examples.SPLIT_KEY: prepared.split,
        examples.MIX_KEY: prepared.mix,
        "train_rows": len(prepared.train_set),
        "world_size": trainer.args.world_size,
        # rows each optimizer step trains on, over every process
        "global_batch": memory.batch_size(config) * config.grad_accum * trainer.args.world_size,
        "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "tokens_per_second": round(tokens / train_only, 1) if train_only > 0 else None,
        "first_train_loss": train_losses[0] if train_losses else None,
        "final_train_loss": train_losses[-1] if train_losses else None,
        "final_eval_loss": eval_losses[-1] if eval_losses else None,
        "peak_memory_mb": trainer.progress.peak_memory or peak_memory_mb(),
        **best.record(config, trainer),
        "versions": versions(),
        models.FILES_KEY: {
            sub: models.file_hashes(run_dir / sub)
            for sub in ("model", "adapter")
            if (run_dir / sub).is_dir()
        },
    }
    atomic.write_json(run_dir / RUN_FILE, summary)
    return summary


@contextlib.contextmanager
def disk_full_named(run_dir: Path, what: str) -> Iterator[None]:
    """A disk that fills while the run writes ``what`` as one line naming the folder and
    the space left: torch's own message is ``unexpected pos 6637248 vs 6637136``, which
    never mentions the disk. Whole checkpoints are kept, so the fix is a resume."""
    try:
        yield
    except Exception as exc:  # OSError, torch's RuntimeError, safetensors' own error
        free = shutil.disk_usage(run_dir).free if run_dir.exists() else None
        said = any(s in str(exc) for s in ("unexpected pos", "No space left on device"))
        full = atomic.disk_error(exc) is not None or (free is not None and free < 1 << 20)
        if not (full or said) or isinstance(exc, LinkLMError):
            raise
        left = f"{free:,} bytes free" if free is not None else "no space"
        raise StorageError(
            f"{run_dir}: the disk filled while writing {what} ({left}; {first_line(exc)}); "
            "free some space, then run again with --resume (whole checkpoints are kept)"
        ) from None


def fit(
    config: TrainConfig, prepared: Prepared, checkpoint: Path | None = None, callbacks=()
) -> tuple[AnswerLossTrainer, float, bool]:
    """Train from ``checkpoint`` (``last_checkpoint`` of a resumed run) or from the start;
    returns the trainer, seconds and whether it finished. Runs under the run's lock."""
    run_dir = run_dir_of(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    # fit runs under the run's lock (held by the launching process for every rank)
    for stray in atomic.sweep_temp_files(run_dir) if ddp.is_main() else ():
        log.warning("%s: half-written by an interrupted run, removed", stray)
    settings = config.model_dump(mode="json") | {
        DATASET_KEY: prepared.manifest["dataset_sha256"],
        examples.SPLIT_KEY: prepared.split,
    }
    remote = runs.checkpoints_url(config)
    to_store = [CheckpointsToStore(run_dir, remote)] if remote else []
    callbacks = [SaveSettings(run_dir / CONFIG_FILE, settings), *to_store, *callbacks]
    trainer = build_trainer(config, prepared, run_dir, callbacks)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    if checkpoint is not None and _restore_finished(trainer, checkpoint):
        return trainer, 0.0, True
    with disk_full_named(run_dir, "a checkpoint"):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    # a callback may stop it (a signal: not finished); early stopping finishes it
    finished = trainer.state.global_step >= trainer.state.max_steps
    finished = finished or best.stopped_early(trainer) is not None
    return trainer, time.perf_counter() - started, finished


def _restore_finished(trainer: AnswerLossTrainer, checkpoint: Path) -> bool:
    """A run killed while saving its result has a checkpoint at its last step: load it and
    train nothing (the Trainer, resumed there, would take one step past the end and save
    it as another checkpoint). False when steps are left to train."""
    state = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE))
    steps = trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1]
    if state.global_step < steps:
        return False
    log.info(
        "%s: training had finished (step %d of %d); saving it", checkpoint, state.global_step, steps
    )
    trainer._load_from_checkpoint(str(checkpoint))  # the Trainer's own resume loader
    trainer.state = state
    trainer.progress.tokens_at_start = state.num_input_tokens_seen or 0
    return True


# runs that start() checked and no train() has taken yet, by their settings: a CLI checks a
# run before Prefect starts, and the flow's train() then trains it without checking again
_started: set[str] = set()


def start(config: TrainConfig) -> TrainConfig:
    """The settings a run trains with, checked before anything loads: the run named (a
    timestamp when no run_name is given), a resume's saved settings under the given ones,
    what the settings need from the machine, the dataset's manifest, the base model, and
    last what the run folder allows (its lock makes the folder). The next ``train`` of the
    returned settings in this process takes them as checked; any other checks again."""
    if config.run_name is None:
        config = config.model_copy(update={"run_name": run_dir_of(config).name})
    config = resumed(runs.from_store(config))
    check_hardware(config)
    reporting.check(config)
    if config.batch_size is None:  # recorded in run.json as the number it trained with
        config = config.model_copy(update={"batch_size": memory.batch_size(config)})
    dataset.read_manifest(config.data_dir)
    for folder, _ in config.mix_sources:
        dataset.read_manifest(folder)
    base = models.resolve(config.model)
    if not config.dry_run:  # a folder it can write, on a disk with room for the run
        atomic.check_writable(config.out_dir, runs.bytes_needed(config, base), "the run")
    check_run_dir(config)
    _started.add(config.model_dump_json())
    return config


@dataclass(frozen=True)
class Steps:
    """How ``train`` runs each of its steps: plain calls by default; the train flow passes
    its Prefect tasks (retries, logs, the UI's view of each step), so both run one sequence."""

    prepare: Callable[..., Prepared]
    dry_run: Callable[..., float]
    fit: Callable[..., tuple[AnswerLossTrainer, float, bool]]
    save: Callable[..., dict]
    launch: Callable[..., dict] = ddp.launch  # the steps above on several processes (DDP)
    # who trains, as a run's lease in the store names it (the train flow adds its flow run)
    owner: Callable[[], dict] = dict
    # called with the lease of a worker that died training this run, once it is taken over
    took_over: Callable[[dict], object] = lambda previous: None


PLAIN_STEPS = Steps(prepare=prepare, dry_run=dry_run, fit=fit, save=save_run)


def train(
    config: TrainConfig, token: str | None = None, callbacks=(), steps: Steps = PLAIN_STEPS
) -> dict:
    """Run one training job end to end; returns the run summary (also in run.json), or
    where it stopped. Checks the run first (``start``) unless it was just started."""
    if config.model_dump_json() not in _started:
        config = start(config)
    _started.discard(config.model_dump_json())  # taken: the next train() of it checks again
    run_dir = run_dir_of(config)
    # the dataset held shared from its first read to run.json: nobody rewrites the rows a
    # run trains on, so the SHA256 it records is the one the folder holds
    with contextlib.ExitStack() as held:
        for folder in [config.data_dir, *(f for f, _ in config.mix_sources)]:
            held.enter_context(dataset.reading(folder))
        if config.dry_run:
            prepared = steps.prepare(config, token)
            return {
                "dry_run": True,
                "loss": steps.dry_run(config, prepared),
                "train_rows": len(prepared.train_set),
            }
        # one writer from the checkpoint's check to the saved run: on this disk, and across
        # machines for a run whose checkpoints are in the store
        with run_lock(config), runs.store_lease(config, steps.owner()) as lease:
            if lease is not None and lease.previous:
                log.warning("took over %s from a worker that stopped: %s", run_dir, lease.previous)
                steps.took_over(lease.previous)
            # before the model loads: a damaged checkpoint is named without waiting for it
            checkpoint = last_checkpoint(run_dir) if config.resume else None
            if config.distributed:
                if callbacks:
                    log.warning(
                        "%d callback(s) not run: the ranks run in their own processes",
                        len(callbacks),
                    )
                return steps.launch(config, checkpoint, token)
            prepared = steps.prepare(config, token)
            trainer, seconds, finished = steps.fit(config, prepared, checkpoint, callbacks)
            if not finished:
                return {"stopped_at_step": trainer.state.global_step, "run_dir": str(run_dir)}
            return steps.save(config, prepared, trainer, seconds, token)


def run_rank(argv: list[str]) -> int:
    """One rank of a training on several processes (``ddp.launch`` starts them under
    torchrun): prepare, train (DDP), and on rank 0 save the run."""
    config = TrainConfig.model_validate_json(Path(argv[0]).read_text())
    checkpoint = Path(argv[1]) if len(argv) > 1 and argv[1] else None
    token = os.environ.get(ddp.TOKEN_ENV)
    prepared = prepare(config, token)
    trainer, seconds, finished = fit(config, prepared, checkpoint)
    if finished and trainer.is_world_process_zero():
        save_run(config, prepared, trainer, seconds, token)
    return 0


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO if ddp.is_main() else logging.WARNING,
        format=f"[rank {ddp.rank()}] %(levelname)s %(name)s: %(message)s",
    )
    sys.exit(run_rank(sys.argv[1:]))
