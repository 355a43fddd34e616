"""Live training curves: ``--report-to tensorboard|mlflow|wandb|none``.

TensorBoard's event files go in the run's own ``tensorboard/`` folder (so they travel with
the run to the store, and ``tensorboard --logdir runs/train`` shows every run); MLflow and
Weights & Biases are the Trainer's own integrations and read their usual environment
(``MLFLOW_TRACKING_URI``, ``WANDB_PROJECT``, ``WANDB_MODE=offline``). Each needs its package,
checked before anything loads.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from linklm.config import TrainConfig
from linklm.model.runs import TrainingError

FOLDER = "tensorboard"  # in the run folder
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def check(config: TrainConfig) -> None:
    """The package ``report_to`` needs is installed, or one line saying how to get it."""
    package = PACKAGES.get(config.report_to)
    if package and importlib.util.find_spec(package) is None:
        raise TrainingError(
            f"report_to {config.report_to} needs the {package} package: "
            f"pip install '.[{config.report_to}]' (or --report-to none)"
        )


def trainer_arguments(config: TrainConfig) -> dict:
    """The Trainer's ``report_to``: its own integration for MLflow and W&B; TensorBoard is
    added as a callback writing into the run folder (``callbacks``)."""
    return {"report_to": [config.report_to] if config.report_to in ("mlflow", "wandb") else "none"}


def callbacks(config: TrainConfig, run_dir: Path) -> list:
    if config.report_to != "tensorboard":
        return []
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(SummaryWriter(log_dir=str(Path(run_dir) / FOLDER)))]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's TensorBoard files: tag -> [(step, value)], in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((Path(run_dir) / FOLDER).glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return {tag: sorted(values) for tag, values in found.items()}
