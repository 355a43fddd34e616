"""Building blocks the learning-curve and sweep flows share: data on demand, one trial."""

from __future__ import annotations

from pathlib import Path

from flows.data import data_flow
from flows.evaluate import evaluate_flow
from flows.train import train_flow
from linklm import store
from linklm.config import DataFlowConfig, EvalConfig, ExperimentBase, GenerationConfig, TrainConfig
from linklm.data import dataset
from linklm.errors import LinkLMError
from linklm.evaluation import evaluate, experiments


class ExperimentError(LinkLMError):
    """No trial of a sweep or learning curve trained and evaluated."""


def attempt(train_config: TrainConfig, config: ExperimentBase) -> tuple[dict, dict | None]:
    """``train_and_evaluate``, or the failed trial's row and no result when one of its
    subflows raised: one failed trial is a row of the experiment, not its end."""
    try:
        return train_and_evaluate(train_config, config)
    except Exception as exc:  # noqa: BLE001 (any failure of the trial's subflows)
        return experiments.failed_trial(exc), None


def trial_config(
    config: ExperimentBase, settings: dict, out_dir: Path, run_name: str
) -> TrainConfig:
    """One trial's training run: ``settings`` (the experiment's TrainSettings under the
    trial's own) on the experiment's data, model and seed, with 200 validation rows and no
    checkpoints (a trial is cheap to redo; checkpoints would cost more than they save)."""
    return TrainConfig(
        **settings,
        data_dir=config.data_dir,
        model=config.model,
        out_dir=out_dir,
        run_name=run_name,
        eval_rows=200,
        save_steps=10**9,
        seed=config.seed,
    )


def ensure_data(config: ExperimentBase) -> Path:
    """The dataset folder, built (or resumed) by the data flow when it has no manifest yet."""
    if not (config.data_dir / "manifest.json").exists():
        dataset.check_buildable(config.data_dir)
        data_flow(
            DataFlowConfig(
                out_dir=config.data_dir,
                generation=GenerationConfig(n_rows=config.n_rows, seed=config.seed),
                artifacts_url=store.NO_COPY,  # the experiment publishes its own folder
            )
        )
    return config.data_dir


def train_and_evaluate(train_config: TrainConfig, config: ExperimentBase) -> tuple[dict, dict]:
    """Train one model (subflow), evaluate it on the shared test rows (subflow).

    Returns (the trial's row: its settings, training figures and headline metrics; the
    evaluation result, whose baselines are the same for every trial).
    """
    trained = train_flow(train_config.model_copy(update={"artifacts_url": store.NO_COPY}))
    result = evaluate_flow(
        EvalConfig(
            artifacts_url=store.NO_COPY,  # the experiment publishes its whole folder
            model=trained["run_dir"],
            data_dir=train_config.data_dir,
            max_rows=config.eval_rows,
            seed=config.seed,
        )
    )
    row = {
        "run_dir": trained["run_dir"],
        "train_rows": trained["train_rows"],
        "steps": trained["steps"],
        "train_seconds": trained["train_seconds"],
        "final_eval_loss": trained["final_eval_loss"],
        "report": result["report"]["html"],
    } | evaluate.headline(result)
    return row, result
