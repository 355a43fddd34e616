"""Keeping the best run (early stopping, the best checkpoint) and live training curves."""

import json

import pytest
import torch
from conftest import tiny_train_config
from pydantic import ValidationError
from safetensors.torch import load_file

from linklm.errors import LinkLMError
from linklm.model import reporting, training


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_early_stopping_on_channel_accuracy_keeps_the_best_checkpoint(small_dataset, tmp_path):
    config = tiny_train_config(
        small_dataset,
        tmp_path,
        max_steps=80,
        eval_steps=4,
        save_total_limit=1,
        best_metric="channel_accuracy",
        best_metric_rows=24,
        early_stopping_patience=2,
        load_best=True,
    )
    summary = training.train(config)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    accuracies = [(h["step"], h["eval_channel_accuracy"]) for h in history if "eval_loss" in h]
    best = summary["best"]
    assert best["metric"] == "eval_channel_accuracy" and best["patience"] == 2
    # it stopped before the 80 steps, two validations after the last improvement
    assert best["stopped_early_at"] == summary["steps"] == accuracies[-1][0] < 80
    top = max(a for _, a in accuracies)
    first_top = next(s for s, a in accuracies if a == top)
    assert best["step"] == first_top and best["value"] == pytest.approx(top)
    assert [s for s, _ in accuracies][-3] == first_top  # then 2 validations without a gain
    assert best["weights_from_step"] == first_top
    # the saved weights are the best checkpoint's (kept by the Trainer though the limit is 1)
    saved = _weights(tmp_path / "run" / "model")
    kept = _weights(tmp_path / "run" / "checkpoints" / f"checkpoint-{first_top}")
    assert saved.keys() == kept.keys()
    assert all(torch.equal(saved[k], kept[k]) for k in saved)
    last = tmp_path / "run" / "checkpoints" / f"checkpoint-{summary['steps']}"
    if first_top != summary["steps"] and last.exists():
        assert not torch.equal(
            _weights(last)["model.embed_tokens.weight"], saved["model.embed_tokens.weight"]
        )


def test_load_best_on_the_loss_and_tensorboard_curves(small_dataset, tmp_path):
    pytest.importorskip("tensorboard")
    config = tiny_train_config(
        small_dataset, tmp_path, load_best=True, eval_steps=6, report_to="tensorboard"
    )
    summary = training.train(config)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    losses = {h["step"]: h["eval_loss"] for h in history if "eval_loss" in h}
    assert sorted(losses) == [6, 12, 18, 24]
    best_step = min(losses, key=losses.get)
    assert summary["best"]["step"] == best_step and summary["best"]["stopped_early_at"] is None
    assert summary["best"]["value"] == pytest.approx(losses[best_step])
    # the TensorBoard event files in the run folder hold the same curves
    curves = reporting.scalars(tmp_path / "run")
    assert [s for s, _ in curves["eval/loss"]] == sorted(losses)
    assert [v for _, v in curves["eval/loss"]] == pytest.approx([losses[s] for s in sorted(losses)])
    train_losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    assert [(s, pytest.approx(v)) for s, v in curves["train/loss"]] == train_losses
    assert len(train_losses) == 6  # every 4 of the 24 steps


def test_best_run_settings_that_cannot_work_are_refused(small_dataset, tmp_path):
    with pytest.raises(ValidationError, match="set eval_rows above 0"):
        tiny_train_config(small_dataset, tmp_path, eval_rows=0, load_best=True)
    with pytest.raises(ValidationError, match="set eval_rows above 0"):
        tiny_train_config(small_dataset, tmp_path, eval_rows=0, early_stopping_patience=3)
    with pytest.raises(ValidationError):
        tiny_train_config(small_dataset, tmp_path, early_stopping_patience=0)
    with pytest.raises(ValidationError):
        tiny_train_config(small_dataset, tmp_path, report_to="comet")


def test_a_reporter_without_its_package_is_named_before_anything_loads(
    small_dataset, tmp_path, monkeypatch
):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    config = tiny_train_config(small_dataset, tmp_path, report_to="mlflow")
    with pytest.raises(LinkLMError, match=r"needs the mlflow package: pip install '\.\[mlflow\]'"):
        training.start(config)
    assert not (tmp_path / "run").exists()
