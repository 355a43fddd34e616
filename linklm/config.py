"""Typed configs with defaults that run on a laptop CPU; flows take them as parameters."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from linklm import schema

StratifyColumn = Literal[
    "environment_type",
    "area_density",
    "image_obstruction_detected",
    "weather_condition",
    "channel_bandwidth_mhz",
]
Balance = Literal["none", "oversample", "undersample"]
Target = Literal["channel", "throughput", "both"]


class GenerationConfig(BaseModel):
    """Everything the bytes of a dataset depend on (and nothing else: not paths, not workers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_rows: int = Field(20_000, gt=0, description="Rows drawn (before balancing).")
    chunk_size: int = Field(10_000, gt=0, description="Rows per Parquet chunk file.")
    seed: int = Field(0, ge=0)
    stratify_by: tuple[StratifyColumn, ...] = Field(
        (), description="Columns whose value combinations are balanced (with balance)."
    )
    balance: Balance = Field(
        "none",
        description="none: natural frequencies; oversample: every stratum as large as the "
        "most frequent one would be in n_rows; undersample: as small as the rarest.",
    )

    @field_validator("stratify_by")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"stratify_by lists a column twice: {list(value)}")
        return value

    @model_validator(mode="after")
    def _balance_needs_strata(self) -> GenerationConfig:
        if self.balance != "none" and not self.stratify_by:
            raise ValueError(
                f"balance={self.balance!r} needs stratify_by (any of {list(schema.STRATIFY_COLUMNS)})"
            )
        return self

    def fingerprint(self) -> str:
        """SHA256 of the canonical JSON: the identity of a dataset's contents."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, ge=0, lt=1)
    salt: str = Field("linklm-split-v1", description="Changes every assignment when changed.")

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.train + self.val >= 1.0:
            raise ValueError(
                f"train + val must leave room for test: {self.train} + {self.val} >= 1"
            )
        return self


class PromptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str | None = Field(
        None, description="str.format template over input fields; None uses the built-in one."
    )
    target: Target = Field("both", description="What the assistant answers.")


class DataFlowConfig(BaseModel):
    """The data flow: generate -> verify -> validate -> export -> split into shards."""

    model_config = ConfigDict(extra="forbid")

    out_dir: Path = Path("runs/data")
    generation: GenerationConfig = GenerationConfig()
    split: SplitConfig = SplitConfig()
    prompt: PromptConfig = PromptConfig()
    max_error_rate: float = Field(
        0.0, ge=0, le=1, description="Fail the flow when more rows than this fraction are bad."
    )
    export_csv: bool = True
    shard_rows: int = Field(50_000, gt=0, description="Rows per JSONL shard file.")
    overwrite: bool = Field(False, description="Replace a dataset made with another config.")


Mode = Literal["full", "lora", "qlora"]
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainConfig(BaseModel):
    """One fine-tuning run: data, model, mode and the knobs of transformers' Trainer."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(Path("runs/data"), description="A dataset folder made by the data flow.")
    model: str = Field("linklm-default", description="Registered name, local folder or hub id.")
    mode: Mode = "full"
    out_dir: Path = Path("runs/train")
    run_name: str | None = Field(None, description="Folder under out_dir; default model-mode-time.")
    target: Target = "both"
    max_rows: int | None = Field(None, gt=0, description="Cap on training rows.")
    eval_rows: int = Field(500, ge=0, description="Validation rows for the val loss.")
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="Overrides epochs when > 0.")
    batch_size: int = Field(32, gt=0)
    grad_accum: int = Field(1, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    channel_weight: float = Field(1.0, ge=0, description="Loss weight of the channel token.")
    throughput_weight: float = Field(1.0, ge=0, description="Loss weight of the throughput token.")
    group_by_length: bool = Field(True, description="Batch rows of similar length (less padding).")
    lora_r: int = Field(8, gt=0)
    lora_alpha: int = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    save_steps: int = Field(200, gt=0)
    save_total_limit: int = Field(2, gt=0)
    eval_steps: int = Field(200, gt=0)
    logging_steps: int = Field(20, gt=0)
    resume: bool = Field(False, description="Continue from the run's last checkpoint.")
    dry_run: bool = Field(False, description="Build everything, one forward/backward, stop.")

    @model_validator(mode="after")
    def _one_precision(self) -> TrainConfig:
        if self.bf16 and self.fp16:
            raise ValueError("choose one of bf16 and fp16")
        if self.resume and not self.run_name:
            raise ValueError("resume needs run_name (the run folder to continue)")
        return self
