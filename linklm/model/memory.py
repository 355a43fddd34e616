"""Training memory: each model's defaults that fit a 24 GB machine, and a refusal up front
of a run whose estimated peak is more than the machine has.

Measured on the 2-core, 24 GB CPU machine (peak resident memory, LoRA, float32):
Gemma 3 270M on the compact prompt (about 100 tokens a row) took 3.9 GB at batch 8; on the
readable text prompt (350-806 tokens a row) 7.3 GB at batch 4, and past 21 GB within a
minute at batch 32, where it had to be killed. A run that will not fit should say so before
it loads anything big, with the figure and the flag to change, not be killed by the kernel
half an hour in. The estimate is deliberately simple (weights, optimiser state, and
activations linear in batch x tokens x layers x hidden size, fitted to the figures above),
so it is an estimate: ``--no-memory-check`` skips it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

GB = 1024**3
# bytes of activations kept for the backward pass, per token, per layer, per unit of hidden
# size (float32): fitted to Gemma 3 270M's 3.9 GB at batch 8 x ~110 tokens and 7.3 GB at
# batch 4 x ~800 tokens (18 layers, hidden 640); gradient checkpointing keeps one layer's
# worth plus each layer's input
ACTIVATION_BYTES = 180
CHECKPOINTED_BYTES = 8
OVERHEAD_BYTES = 1.0 * GB  # python, torch, tokenizers, the dataset in memory


def is_gemma_270m(model: str) -> bool:
    return "gemma-3-270m" in model.lower()


def default_batch_size(model: str, prompt_kind: str, cuda: bool) -> int:
    """The batch size a run of ``model`` gets when none is given: 32 (the default model
    anywhere; any model on a GPU, where memory is checked against the GPU's), and for Gemma 3
    270M on a CPU 8 on a compact prompt, 4 on the text prompt (see the module's figures)."""
    if cuda or not is_gemma_270m(model):
        return 32
    return 4 if prompt_kind == "text" else 8


@dataclass(frozen=True)
class Estimate:
    peak_bytes: float
    available_bytes: float
    where: str  # "memory" or "GPU memory"

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.available_bytes


def machine_bytes(cuda: bool) -> tuple[float, str]:
    """What a run may use: the GPU's memory, else the machine's (or its cgroup's) memory."""
    if cuda:
        import torch

        return float(torch.cuda.get_device_properties(0).total_memory), "GPU memory"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:  # a container's limit, where there is one
        with open("/sys/fs/cgroup/memory.max") as limit:
            text = limit.read().strip()
        if text.isdigit():
            total = min(total, int(text))
    except OSError:
        pass
    return float(total), "memory"


def estimate(
    *,
    parameters: int,
    trainable: int,
    layers: int,
    hidden: int,
    vocab: int,
    batch: int,
    tokens: int,
    answer_tokens: int,
    gradient_checkpointing: bool,
    bytes_per_weight: float = 4.0,
) -> float:
    """Estimated peak bytes of a training step: the weights, gradients and AdamW's two
    moments of the trainable ones, activations, and the answer positions' logits."""
    weights = parameters * bytes_per_weight + trainable * 4 * 3
    per_token = CHECKPOINTED_BYTES if gradient_checkpointing else ACTIVATION_BYTES
    activations = batch * tokens * layers * hidden * per_token
    if gradient_checkpointing:  # one layer recomputed in full during the backward pass
        activations += batch * tokens * hidden * ACTIVATION_BYTES
    logits = batch * (answer_tokens + 1) * vocab * 4 * 3  # logits, softmax, their gradient
    return weights + activations + logits + OVERHEAD_BYTES


def largest_batch(fits, batch: int) -> int:
    """The largest batch below ``batch`` (halving) for which ``fits(batch)``; 0 if none."""
    while batch > 1:
        batch //= 2
        if fits(batch):
            return batch
    return 0


def batch_size(config) -> int:
    """The run's batch size: the one given, else the model's default on this machine."""
    if config.batch_size:
        return config.batch_size
    import torch

    kind = "text" if config.prompt == "text" else "compact"
    return default_batch_size(config.model, kind, torch.cuda.is_available())


def check(config, model, train_set, answer_tokens: int) -> Estimate:
    """The run's estimated peak against what the machine has; raises ``MemoryError`` with
    the figure, the flag to change and a batch size that fits when it does not fit."""
    import torch

    cuda = torch.cuda.is_available()
    text_config = (
        model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    )
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokens = max(train_set["length"][:]) if len(train_set) else 0
    quantized = config.mode == "qlora"
    batch = batch_size(config)

    def peak(rows: int, checkpointing: bool) -> float:
        return estimate(
            parameters=parameters,
            trainable=trainable,
            layers=text_config.num_hidden_layers,
            hidden=text_config.hidden_size,
            vocab=text_config.vocab_size,
            batch=rows,
            tokens=tokens,
            answer_tokens=answer_tokens,
            gradient_checkpointing=checkpointing,
            bytes_per_weight=0.6 if quantized else (2.0 if config.bf16 or config.fp16 else 4.0),
        )

    available, where = machine_bytes(cuda)
    result = Estimate(peak(batch, config.gradient_checkpointing), available, where)
    if result.fits or not config.memory_check:
        return result
    fits = largest_batch(lambda rows: peak(rows, config.gradient_checkpointing) <= available, batch)
    advice = f"--batch-size {fits} fits" if fits else "no batch size fits"
    if not config.gradient_checkpointing and peak(batch, True) <= available:
        advice += ", or keep this batch with --gradient-checkpointing"
    raise MemoryError(
        f"{config.model}: training at batch {batch} x {tokens} tokens (the longest row) needs "
        f"an estimated {result.peak_bytes / GB:.1f} GB, and this machine has {available / GB:.1f} "
        f"GB of {where}: {advice} (--grad-accum keeps the rows per step; --no-memory-check "
        "trains anyway)"
    )
