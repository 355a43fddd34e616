"""Keeping the best run: early stopping and the best checkpoint on a validation metric.

A run trained for a fixed number of steps keeps its last weights, which on a long run may be
worse than earlier ones (the loss of the default model's demo still falls at 3,000 steps;
a fine-tuned Gemma on a few thousand rows can overfit). ``--load-best`` finishes with the
weights of the best validation, ``--early-stopping-patience N`` stops after N validations
without a better one. "Better" is the validation loss, or the channel accuracy (ranked
top-1, the figure every report leads with) on a few hundred validation rows: the loss mixes
channel and throughput tokens, and a lower loss is not always a better channel.
"""

from __future__ import annotations

import logging

import polars as pl
from transformers import EarlyStoppingCallback

from linklm.config import TrainConfig

log = logging.getLogger(__name__)

ACCURACY = "channel_accuracy"  # logged as eval_channel_accuracy


def judged(config: TrainConfig) -> bool:
    """True when the run keeps track of its best validation."""
    return config.load_best or config.early_stopping_patience is not None


def trainer_arguments(config: TrainConfig) -> dict:
    """TrainingArguments for a run that keeps its best: the metric, its direction, and a
    checkpoint at every validation with load_best (the Trainer can only go back to a step
    it saved)."""
    if not judged(config):
        return {}
    accuracy = config.best_metric == ACCURACY
    args = {
        "metric_for_best_model": f"eval_{ACCURACY}" if accuracy else "eval_loss",
        "greater_is_better": accuracy,
        "load_best_model_at_end": config.load_best,
    }
    if config.load_best:
        args["save_steps"] = config.eval_steps
    return args


def accuracy_rows(config: TrainConfig, validation: pl.DataFrame | None) -> pl.DataFrame | None:
    """The validation rows the channel accuracy is measured on, when it is the metric."""
    if not judged(config) or config.best_metric != ACCURACY or validation is None:
        return None
    return validation.head(config.best_metric_rows)


def channel_accuracy(model, tokenizer, prompt_format, rows: pl.DataFrame, batch_size: int) -> float:
    """Share of ``rows`` whose best-ranked channel is the recommended one."""
    from linklm.model.answers import rank_channels

    was_training = model.training
    ranked = rank_channels(model, tokenizer, prompt_format, rows, batch_size=batch_size)
    model.train(was_training)
    truth = rows["recommended_channel_mhz"].to_list()
    hits = sum(1 for r, t in zip(ranked, truth, strict=True) if r and r[0][0] == t)
    return hits / max(len(truth), 1)


class EarlyStop(EarlyStoppingCallback):
    """The Trainer's early stopping, remembering the step it stopped at: a run stopped this
    way is finished (and saved), not interrupted."""

    def __init__(self, patience: int):
        super().__init__(early_stopping_patience=patience)
        self.stopped_at: int | None = None

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if control.should_training_stop and self.stopped_at is None:
            self.stopped_at = state.global_step
            log.info(
                "step %d: %s has not improved for %d validations, stopping (best %.4f at step %s)",
                state.global_step,
                args.metric_for_best_model,
                self.early_stopping_patience,
                state.best_metric,
                state.best_global_step,
            )


def callbacks(config: TrainConfig) -> list:
    return [EarlyStop(config.early_stopping_patience)] if config.early_stopping_patience else []


def stopped_early(trainer) -> int | None:
    """The step early stopping ended the run at, or None."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, EarlyStop):
            return callback.stopped_at
    return None


def record(config: TrainConfig, trainer) -> dict:
    """What run.json says about the choice: the metric, the best step and value, the step
    the weights saved come from, and where early stopping ended the run."""
    if not judged(config):
        return {}
    state = trainer.state
    best_step = state.best_global_step
    return {
        "best": {
            "metric": trainer.args.metric_for_best_model,
            "value": state.best_metric,
            "step": best_step,
            "weights_from_step": best_step
            if config.load_best and state.best_model_checkpoint
            else state.global_step,
            "stopped_early_at": stopped_early(trainer),
            "patience": config.early_stopping_patience,
        }
    }
