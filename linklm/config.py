"""Typed configs with defaults that run on a laptop CPU; flows take them as parameters."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

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
BestMetric = Literal["loss", "channel_accuracy"]
PromptChoice = Literal["auto", "text", "compact", "number-tokens"]
ReportTo = Literal["none", "tensorboard", "mlflow", "wandb"]

N_ROWS = 20_000  # a generated dataset's rows unless told otherwise
MODEL_ROWS = 30_000  # rows drawn where a flow trains the model it reports on (demo, retraining)


class GenerationConfig(BaseModel):
    """Everything the bytes of a dataset depend on (and nothing else: not paths, not workers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_rows: int = Field(N_ROWS, gt=0, description="Rows drawn (before balancing).")
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
    # the whole salt is hashed: salts that share a prefix split the rows differently
    salt: str = Field("linklm-split-v2", description="Changes every assignment when changed.")

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
    workers: int = Field(2, gt=0, description="Threads generating chunks on this machine.")
    dask_address: str | None = Field(
        None,
        description="Generate the chunks on the workers of this Dask cluster instead "
        "(tcp://host:8786); out_dir must be a folder they all share. Needs the dask extra.",
    )
    artifacts_url: str | None = Field(
        None,
        description="Folder or fsspec URL (a mounted Drive, file://, s3://, gs://) the results are "
        "copied to when finished; default $LINKLM_ARTIFACTS_URL, else no copy.",
    )


class ImportConfig(BaseModel):
    """The import flow: a file of rows made elsewhere -> a dataset folder (chunks, manifest,
    validation, export, shards) that training and evaluation take like a generated one."""

    model_config = ConfigDict(extra="forbid")

    source: Path = Field(description="CSV (the seed's format or another tool's), Parquet or JSONL.")
    out_dir: Path = Path("runs/survey")
    require_physics: bool = Field(
        False,
        description="Quarantine rows whose labels the synthetic physics does not re-derive "
        "(by default that agreement is reported and the rows are kept).",
    )
    split: SplitConfig = SplitConfig()
    prompt: PromptConfig = PromptConfig()
    max_error_rate: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Fail when more rows than this fraction break the contract (by default "
        "bad rows are quarantined and the rest imported).",
    )
    export_csv: bool = True
    shard_rows: int = Field(50_000, gt=0, description="Rows per JSONL shard file.")
    overwrite: bool = Field(False, description="Replace a dataset made from another file.")
    artifacts_url: str | None = Field(
        None, description="Folder or fsspec URL the finished dataset is copied to."
    )


Mode = Literal["full", "lora", "qlora"]
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def intervals_for(steps: int) -> dict[str, int]:
    """Warm-up, evaluation, checkpoint and logging intervals scaled to a run of ``steps``:
    a short run still evaluates 4 times, checkpoints twice and logs 20 times."""
    return {
        "warmup_steps": min(100, steps // 10),
        "eval_steps": max(steps // 4, 1),
        "save_steps": max(steps // 2, 1),
        "logging_steps": max(steps // 20, 1),
    }


class TrainSettings(BaseModel):
    """How a model trains: mode, steps, batch, optimiser, loss weights, LoRA, precision.

    ``TrainConfig`` adds where a run reads and writes; a demo, a retraining, a learning curve
    or a sweep holds one of these (with its own defaults) and hands it to every run it makes.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "full"
    target: Target = "both"
    prompt: PromptChoice = Field(
        "auto",
        description="How links are shown to the model: auto (the model's own format, else "
        "compact), text (readable template, JSON answer), compact (the quietest scan pairs "
        "as short number words, a two-word answer), number-tokens (compact, with each number "
        "word added to the tokenizer as one token).",
    )
    max_rows: int | None = Field(None, gt=0, description="Cap on training rows.")
    augment_copies: int = Field(
        0, ge=0, description="Extra variants of each training row without some losing channels."
    )
    augment_keep: float = Field(
        0.5, ge=0, le=1, description="Chance that a variant keeps each losing channel."
    )
    shift_copies: int = Field(
        0,
        ge=0,
        description="Extra variants of each training row with a louder scan (same channel).",
    )
    shift_max_db: float = Field(
        5.0, ge=0.1, description="Largest scan shift of those variants (the scan's 0.1 dB grid)."
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the training rows.")
    max_steps: int = Field(-1, description="Steps to train; overrides epochs. -1: by epochs.")
    batch_size: int = Field(32, gt=0, description="Rows per step.")
    memory_check: bool = Field(
        True,
        description="Refuse a run whose estimated peak memory is more than the machine (or "
        "the GPU) has, before the first step.",
    )
    grad_accum: int = Field(1, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    channel_weight: float = Field(1.0, ge=0, description="Loss weight of the channel token.")
    throughput_weight: float = Field(1.0, ge=0, description="Loss weight of the throughput token.")
    lora_r: int = Field(8, gt=0)
    lora_alpha: int = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    torch_compile: bool = Field(
        False,
        description="Compile the model with torch.compile: faster steps after a compile of "
        "about a minute on CPU, so it pays off on long runs only.",
    )
    early_stopping_patience: int | None = Field(
        None,
        gt=0,
        description="Stop after this many validations in a row without a better best_metric "
        "(none: train every step). Needs validation rows.",
    )
    load_best: bool = Field(
        False,
        description="Finish with the weights of the best validation (best_metric), not of the "
        "last step; a checkpoint is then saved at every validation.",
    )
    best_metric: BestMetric = Field(
        "loss",
        description="What 'best' means for load_best and early stopping: the validation loss, "
        "or the channel accuracy (ranked top-1) on best_metric_rows validation rows.",
    )
    best_metric_rows: int = Field(
        200, gt=0, description="Validation rows the channel accuracy is measured on."
    )
    report_to: ReportTo = Field(
        "none",
        description="Where the Trainer sends live training curves: tensorboard (event files "
        "in the run's tensorboard/ folder), mlflow, wandb (each needs its package: the "
        "extra of that name), or none.",
    )

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, steps: int) -> int:
        if steps == 0 or steps < -1:
            raise ValueError(f"max_steps must be positive, or -1 to train by epochs: {steps}")
        return steps

    @model_validator(mode="after")
    def _one_precision(self) -> TrainSettings:
        if self.bf16 and self.fp16:
            raise ValueError("choose one of bf16 and fp16")
        if self.channel_weight == 0 and self.throughput_weight == 0:
            raise ValueError(
                "channel_weight and throughput_weight are both 0: the loss would be 0 and "
                "nothing would be learned; give one of them a weight"
            )
        return self

    def planned_steps(self, train_rows: int) -> int:
        """max_steps, or what ``epochs`` comes to on ``train_rows`` rows."""
        if self.max_steps > 0:
            return self.max_steps
        batch = self.batch_size or 32  # a TrainConfig's None: the default model's 32
        return max(1, math.ceil(train_rows * self.epochs / (batch * self.grad_accum)))


MAX_MIX_WEIGHT = 100.0


def mix_source(entry: str) -> tuple[Path, float]:
    """(folder, weight) of a ``mix`` entry: ``runs/survey:3``, or ``runs/survey`` (weight 1).
    A colon not followed by a number belongs to the path (``C:/data``)."""
    path, sep, weight = entry.rpartition(":")
    if not sep or not path:
        return Path(entry), 1.0
    try:
        value = float(weight)
    except ValueError:
        return Path(entry), 1.0
    if not 0 < value <= MAX_MIX_WEIGHT:  # also NaN
        raise ValueError(
            f"mix entry {entry!r}: the weight must be above 0 and at most {MAX_MIX_WEIGHT:g}"
        )
    return Path(path), value


class TrainConfig(TrainSettings):
    """One fine-tuning run: how it trains (``TrainSettings``), on which data, from which
    model, into which run folder, and the Trainer's intervals."""

    data_dir: Path = Field(Path("runs/data"), description="A dataset folder made by the data flow.")
    mix: tuple[str, ...] = Field(
        (),
        description="More dataset folders whose training rows join data_dir's, each as "
        "FOLDER or FOLDER:WEIGHT (weight 3: each row three times; 0.5: a seeded half), e.g. "
        "runs/survey:3 to mix field data with synthetic data. Validation stays data_dir's.",
    )
    model: str = Field("linklm-default", description="Registered name, local folder or hub id.")
    # None here (a flow's settings keep 32, a plain integer in a deployment's run form):
    # flows.train gives each model its own default, recorded in run.json as a number
    batch_size: int | None = Field(
        None,
        gt=0,
        description="Rows per step; none: the model's default (32; Gemma 3 270M on a CPU: "
        "8 on the compact prompt, 4 on the text one, to fit 24 GB).",
    )
    out_dir: Path = Path("runs/train")
    run_name: str | None = Field(None, description="Folder under out_dir; default model-mode-time.")
    eval_rows: int = Field(500, ge=0, description="Validation rows for the val loss.")
    seed: int = 0
    group_by_length: bool = Field(True, description="Batch rows of similar length (less padding).")
    warmup_steps: int = Field(100, ge=0)
    save_steps: int = Field(200, gt=0)
    save_total_limit: int = Field(2, gt=0)
    eval_steps: int = Field(200, gt=0)
    logging_steps: int = Field(20, gt=0)
    resume: bool = Field(False, description="Continue from the run's last checkpoint.")
    artifacts_url: str | None = Field(
        None,
        description="The store (a folder or fsspec URL) the run folder is copied to when "
        "finished, as runs/<run_name>; default $LINKLM_ARTIFACTS_URL, else no copy.",
    )
    store_checkpoints: bool = Field(
        False,
        description="Copy each checkpoint to the store as it is saved: the same run_name run "
        "again on any worker (a retry, a re-trigger after a worker died) resumes from the "
        "newest one there. Needs run_name and a store.",
    )
    dry_run: bool = Field(False, description="Build everything, one forward/backward, stop.")
    # Training on several processes (DDP under torchrun: gloo on the CPU, NCCL on GPUs).
    nproc_per_node: int = Field(
        1, gt=0, description="Processes on this machine (DDP); 1 trains in this process."
    )
    nnodes: int = Field(1, gt=0, description="Machines training together (DDP).")
    node_rank: int = Field(0, ge=0, description="This machine's rank among nnodes (0 saves).")
    master_addr: str = Field("127.0.0.1", description="Address of the rank-0 machine.")
    master_port: int = Field(29500, gt=0, lt=65536, description="Port of the rank-0 machine.")

    @field_validator("run_name")
    @classmethod
    def _one_folder(cls, name: str | None) -> str | None:
        if name is not None and (name.strip() in ("", ".", "..") or any(c in name for c in "/\\")):
            raise ValueError(f"{name!r} is not a folder name (a name under out_dir, without /)")
        return name

    @field_validator("mix")
    @classmethod
    def _mix_entries(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            mix_source(entry)  # a bad weight is named here, before anything loads
        return entries

    @property
    def mix_sources(self) -> list[tuple[Path, float]]:
        """(folder, weight) of each ``mix`` entry."""
        return [mix_source(entry) for entry in self.mix]

    @property
    def distributed(self) -> bool:
        """True when training runs on several processes (under torchrun)."""
        return self.nproc_per_node * self.nnodes > 1

    @model_validator(mode="after")
    def _rank_within_nodes(self) -> TrainConfig:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        return self

    @model_validator(mode="after")
    def _best_needs_validation(self) -> TrainConfig:
        if (self.load_best or self.early_stopping_patience) and not self.eval_rows:
            raise ValueError(
                "load_best and early_stopping_patience judge the run on validation rows: "
                "set eval_rows above 0"
            )
        return self

    @model_validator(mode="after")
    def _resume_names_a_run(self) -> TrainConfig:
        if self.resume and not self.run_name:
            raise ValueError("resume needs run_name (the run folder to continue)")
        if self.store_checkpoints and not self.run_name:
            raise ValueError(
                "store_checkpoints needs run_name: a run found again by its name resumes"
            )
        return self


# Where a model answers (linklm.model.devices): the first GPU when torch sees one, else the
# CPU; a device asked for and not there is an error, never a silent CPU.
DEVICE_FIELD = Field(
    "auto",
    pattern=r"^(auto|cpu|cuda(:\d+)?)$",
    description="auto (the first CUDA GPU if any, else the CPU), cpu, cuda or cuda:N.",
)
Split = Literal["train", "validation", "test"]  # the names the shards and split_rows use


class EvalConfig(BaseModel):
    """One evaluation: a trained model (or run folder) against baselines on a dataset split."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "latest",
        description="A run folder, a model folder, a registered name, or 'latest': the newest "
        "finished run under runs_dir.",
    )
    runs_dir: Path = Field(Path("runs/train"), description="Where 'latest' looks for runs.")
    data_dir: Path = Field(Path("runs/data"), description="A dataset folder made by the data flow.")
    split: Split = "test"
    max_rows: int | None = Field(2000, gt=0, description="Cap on evaluated rows (none: all).")
    baseline_train_rows: int = Field(
        20_000, gt=0, description="Training rows the baselines learn their statistics from."
    )
    tabular_rows: int = Field(
        5000,
        gt=0,
        description="Training rows of the scikit-learn baseline (trees are O(rows)), drawn "
        "from the baseline_train_rows.",
    )
    batch_size: int = Field(64, gt=0)
    device: str = DEVICE_FIELD
    rank: bool = Field(True, description="Rank every available channel (top-k); costs a forward.")
    out_dir: Path | None = Field(
        None,
        description="Default: <run folder>/eval-<split> (for --predictions: runs/eval/<file "
        "name>).",
    )
    predictions: Path | None = Field(
        None,
        description="Score this predictions file (CSV, Parquet, JSONL: scenario_id, a channel "
        "and/or a throughput per row, as flows.predict writes) instead of a model.",
    )
    artifacts_url: str | None = Field(
        None,
        description="Folder or fsspec URL the evaluation folder is copied to when finished; "
        "default $LINKLM_ARTIFACTS_URL, else no copy.",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _tabular_within_baseline_rows(self) -> EvalConfig:
        if self.tabular_rows > self.baseline_train_rows:
            raise ValueError(
                f"tabular_rows {self.tabular_rows} > baseline_train_rows "
                f"{self.baseline_train_rows}: the trees learn from a sample of the baselines' "
                "training rows; raise baseline_train_rows too"
            )
        return self


class DemoConfig(BaseModel):
    """The one-command demo: defaults that finish in minutes on a laptop CPU."""

    model_config = ConfigDict(extra="forbid")

    out_dir: Path = Path("runs/demo")
    n_rows: int = Field(MODEL_ROWS, gt=0, description="Rows generated (80 % train, 10 % val/test).")
    seed: int = Field(0, ge=0, description="Seed of the data, the training and the baselines.")
    model: str = Field("linklm-default", description="Registered name, local folder or hub id.")
    train: TrainSettings = Field(
        TrainSettings(max_steps=3000, weight_decay=0.3),
        description="How the demo's model trains (docs/benchmarks.md has what the defaults buy).",
    )
    eval_rows: int = Field(1000, gt=0, description="Test rows the model and baselines answer.")
    artifacts_url: str | None = Field(
        None,
        description="Folder or fsspec URL (a mounted Drive, file://, s3://, gs://) the results are "
        "copied to when finished; default $LINKLM_ARTIFACTS_URL, else no copy.",
    )


Metric = Literal["top1", "top1_ranked", "top3", "throughput_mae"]
LOWER_IS_BETTER: frozenset[str] = frozenset({"throughput_mae"})


class ExperimentBase(BaseModel):
    """What a learning curve and a sweep share: the data, the model and how to score it."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(
        Path("runs/data"), description="Dataset folder; built by the data flow if missing."
    )
    n_rows: int = Field(N_ROWS, gt=0, description="Rows to generate when data_dir is missing.")
    model: str = Field("linklm-default", description="Registered name, local folder or hub id.")
    eval_rows: int = Field(1000, gt=0, description="Test rows every trained model answers.")
    seed: int = 0
    artifacts_url: str | None = Field(
        None,
        description="Folder or fsspec URL (a mounted Drive, file://, s3://, gs://) the results are "
        "copied to when finished; default $LINKLM_ARTIFACTS_URL, else no copy.",
    )
    fan_out: str | None = Field(
        None,
        description="Run each trial as a run of this deployment ('trial/trial'), so idle "
        "workers take them at once; trials report back through the store. None: one after "
        "another in this flow.",
    )
    max_parallel: int = Field(4, gt=0, description="Trials running at once with fan_out.")


class TrialConfig(BaseModel):
    """One trial of a sweep or learning curve, run by the trial deployment on any worker."""

    model_config = ConfigDict(extra="forbid")

    experiment: ExperimentBase = Field(
        ExperimentBase(), description="The data, model and scoring every trial shares."
    )
    train: TrainConfig = Field(
        TrainConfig(run_name="trial"), description="The trial's training run."
    )
    result_url: str | None = Field(
        None,
        description="Where the trial writes its row and evaluation (JSON) for the experiment "
        "that started it; None: nowhere (the flow's return value only).",
    )


class LearningCurveConfig(ExperimentBase):
    """Train and evaluate on increasing numbers of training rows, same test rows for all."""

    out_dir: Path = Path("runs/learning-curve")
    sizes: tuple[int, ...] = Field((1000, 3000, 10_000), description="Training rows per point.")
    train: TrainSettings = Field(
        TrainSettings(epochs=3.0),
        description="How each point trains; its max_rows is the point's size.",
    )

    @field_validator("sizes")
    @classmethod
    def _increasing(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(v <= 0 for v in value) or list(value) != sorted(set(value)):
            raise ValueError(f"sizes must be positive and strictly increasing: {list(value)}")
        return value


SWEEPABLE = tuple(TrainSettings.model_fields)  # what a trial may set


class SweepConfig(ExperimentBase):
    """A grid (every combination) or an explicit list of TrainConfig settings, ranked."""

    out_dir: Path = Path("runs/sweep")
    grid: dict[str, list] = Field(
        default_factory=lambda: {"learning_rate": [3e-4, 1e-3, 3e-3]},
        description="Setting -> values; every combination is one trial.",
    )
    trials: list[dict] = Field(
        default_factory=list, description="Explicit trials (used instead of grid when given)."
    )
    train: TrainSettings = Field(
        TrainSettings(max_rows=10_000, max_steps=300),
        description="How every trial trains, under the settings the trial itself sets.",
    )
    metric: Metric = "top1"

    @model_validator(mode="after")
    def _known_settings(self) -> SweepConfig:
        empty = [k for k, values in self.grid.items() if not values]
        if empty and not self.trials:
            raise ValueError(f"grid setting(s) {empty} have no values, so there is no trial")
        for trial in self.expanded():
            unknown = set(trial) - set(SWEEPABLE)
            if unknown:
                raise ValueError(
                    f"cannot sweep {sorted(unknown)}; sweepable settings: {list(SWEEPABLE)}"
                )
            TrainSettings(**trial)  # every value must be a valid setting
        return self

    def expanded(self) -> list[dict]:
        """The trials: the explicit list, or the grid's cartesian product in grid order."""
        if self.trials:
            return [dict(t) for t in self.trials]
        import itertools

        keys = list(self.grid)
        return [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*self.grid.values())
        ]


REGISTRY_FIELD = Field(
    None,
    description="The champion registry (a path or a store URL); default the store's "
    "registry/registry.json when a store is set, else runs/registry/registry.json.",
)


def _registry_as_text(value: object) -> object:
    """A Path given in Python is kept as its text (a store URL is no Path)."""
    return str(value) if isinstance(value, Path) else value


RegistryLocation = Annotated[str | None, BeforeValidator(_registry_as_text)]


class PredictConfig(BaseModel):
    """Batch scoring: a trained model answers every link of a file."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "champion", description="Run folder, model folder, registered name, or 'champion'."
    )
    input: str = Field(
        "runs/data",
        description="CSV, JSON, JSON lines or Parquet (a path, an fsspec URL, or '-'), or a "
        "dataset folder made by the data flow (then the rows of `split`).",
    )
    split: Split = Field("test", description="The split scored when input is a dataset folder.")
    output: str = Field(
        "predictions.csv", description="Where the answers go (.csv, .jsonl or .parquet; '-')."
    )
    fallback: Literal["none", "heuristic", "ranked"] = Field(
        "none",
        description="What replaces an unusable answer: heuristic, the quietest channel; ranked, "
        "the model's most likely available channel.",
    )
    batch_size: int = Field(64, gt=0)
    device: str = DEVICE_FIELD
    registry: RegistryLocation = REGISTRY_FIELD
    top_k: int = Field(
        3,
        ge=1,
        description="Ranked candidate channels written per row (candidate_1..k); a row with "
        "fewer available channels leaves the last ones empty.",
    )
    strict: bool = Field(
        False,
        description="Skip, as bad inputs, the links outside what the model saw (answered by "
        "default, with the reason in the out_of_range column).",
    )

    @field_validator("top_k")
    @classmethod
    def _within_grid(cls, value: int) -> int:
        grid = schema.CHANNEL_GRID_MHZ
        if value > len(grid):
            raise ValueError(
                f"top_k {value} is more than the {len(grid)} channels of the 5 GHz grid "
                f"({grid[0]}..{grid[-1]} MHz); a row lists at most "
                f"{schema.MAX_CHANNELS} available channels"
            )
        return value


class ServeConfig(BaseModel):
    """The prediction service: one loaded model answering links over HTTP, with a page."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "champion",
        description="Run folder, model folder, registered name, or 'champion' (followed: a "
        "new champion is served without a restart).",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, lt=65536, description="0: any free port.")
    registry: RegistryLocation = REGISTRY_FIELD
    fallback: Literal["none", "heuristic", "ranked"] = Field(
        "none",
        description="What replaces an unusable answer (as flows.predict's --fallback).",
    )
    top_k: int = Field(3, ge=1, le=len(schema.CHANNEL_GRID_MHZ))
    strict: bool = Field(False, description="Refuse links outside what the model saw.")
    device: str = DEVICE_FIELD
    batch_window_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="How long a request waits for others to share its model call.",
    )
    max_batch: int = Field(64, gt=0, description="Most links answered in one model call.")
    max_links: int = Field(1000, gt=0, description="Most links one request may send.")
    max_body_bytes: int = Field(
        2_000_000, gt=0, description="Largest request body; a bigger one is refused (413)."
    )
    max_queue: int = Field(
        1000, gt=0, description="Requests waiting at most; more are refused (503), not queued."
    )
    reload_every_s: float = Field(
        5.0, gt=0, description="How often 'champion' is looked up for a new one."
    )


class RetrainConfig(BaseModel):
    """Scheduled retraining: fresh data -> challenger -> frozen test rows -> promote if better."""

    model_config = ConfigDict(extra="forbid")

    registry: RegistryLocation = REGISTRY_FIELD
    frozen_dir: Path = Field(
        Path("runs/registry/frozen-test"),
        description="The frozen test set every challenger and the champion answer; made once.",
    )
    frozen_rows: int = Field(
        10_000, gt=0, description="Rows of the frozen dataset (its test split is about 10 %)."
    )
    frozen_seed: int = Field(
        1_000_003, ge=0, description="Seed of the frozen dataset; never change it for a registry."
    )
    data_dir: Path | None = Field(
        None, description="Pick up this dataset folder instead of generating fresh data."
    )
    n_rows: int = Field(MODEL_ROWS, gt=0, description="Rows of fresh data when data_dir is None.")
    data_seed: int | None = Field(
        None, ge=0, description="Seed of the fresh data; None: a new one from the clock."
    )
    out_dir: Path = Field(Path("runs/retrain"), description="Fresh data and challenger runs.")
    model: str = Field("linklm-default", description="Registered name, local folder or hub id.")
    train: TrainSettings = Field(
        TrainSettings(max_steps=2000), description="How every challenger trains."
    )
    seed: int = 0
    metric: Metric = Field(
        "top1_ranked", description="What a challenger must beat the champion on."
    )
    eval_rows: int = Field(1000, gt=0, description="Frozen test rows every model answers.")
    replace_unscorable_champion: bool = Field(
        False,
        description="Let a scored challenger replace a champion that cannot be scored (its "
        "run folder gone or damaged); without it such a run fails and names the champion.",
    )
    artifacts_url: str | None = Field(
        None,
        description="Folder or fsspec URL the challenger's run and the registry are copied to; "
        "default $LINKLM_ARTIFACTS_URL, else no copy.",
    )
