"""Configs are composed: a flow that makes training runs holds a TrainSettings, and its CLI
offers each setting as an option of its own, over the flow's defaults."""

from __future__ import annotations

import pytest

from flows import demo, learning_curve, retrain, sweep
from flows.cli import ArgumentParser, add_model_options, model_from_options
from linklm.config import (
    DemoConfig,
    LearningCurveConfig,
    RetrainConfig,
    SweepConfig,
    TrainConfig,
    TrainSettings,
)


def _parsed(config_cls, argv: list[str]):
    parser = ArgumentParser(prog="test")
    add_model_options(parser, config_cls)
    return model_from_options(config_cls, parser.parse_args(argv))


def test_every_training_setting_is_declared_once():
    settings = set(TrainSettings.model_fields)
    assert settings <= set(TrainConfig.model_fields)
    for composite in (DemoConfig, RetrainConfig, LearningCurveConfig, SweepConfig):
        own = set(composite.model_fields)
        assert composite.model_fields["train"].annotation is TrainSettings
        assert not own & settings, f"{composite.__name__} re-declares {own & settings}"


def test_an_option_typed_lands_on_the_flows_own_training_defaults():
    config = _parsed(DemoConfig, ["--batch-size", "16", "--n-rows", "1500"])
    assert config.train.batch_size == 16 and config.n_rows == 1500
    assert config.train.max_steps == 3000 and config.train.weight_decay == 0.3  # demo defaults
    by_epochs = _parsed(DemoConfig, ["--epochs", "2"])
    assert by_epochs.train.epochs == 2 and by_epochs.train.max_steps == -1
    both = _parsed(DemoConfig, ["--epochs", "2", "--max-steps", "50"])
    assert both.train.max_steps == 50
    assert _parsed(SweepConfig, ["--max-rows", "none"]).train.max_rows is None


@pytest.mark.parametrize(
    ("config", "make"),
    [
        (DemoConfig(train=TrainSettings(mode="lora", lora_r=4)), lambda c: demo.configs(c)[1]),
        (
            RetrainConfig(train=TrainSettings(mode="lora", lora_r=4)),
            lambda c: retrain.challenger_config(c, c.out_dir / "data", "x"),
        ),
        (
            LearningCurveConfig(train=TrainSettings(mode="lora", lora_r=4)),
            lambda c: learning_curve.train_config(c, 64, "t"),
        ),
        (
            SweepConfig(train=TrainSettings(mode="lora", lora_r=4)),
            lambda c: sweep.train_config(c, 0, {}, "t"),
        ),
    ],
    ids=["demo", "retrain", "learning-curve", "sweep"],
)
def test_the_runs_a_flow_makes_train_with_its_settings(config, make):
    made = make(config)
    assert made.mode == "lora" and made.lora_r == 4
    assert made.model == config.model and made.seed == config.seed
