"""Which device a model answers on. On these machines (no GPU) the path that would take
CUDA takes the CPU and says so; a GPU asked for and not there is one line, before anything
loads; metrics.json records the device."""

import json
import logging

import pytest
import torch
from conftest import cli_error
from pydantic import ValidationError

from flows import evaluate as evaluate_cli
from flows import predict as predict_cli
from linklm.config import EvalConfig, PredictConfig, TrainConfig
from linklm.evaluation import evaluate
from linklm.model import devices, training

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")


@no_gpu
def test_auto_takes_the_cpu_here_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="linklm.model.devices"):
        device = devices.choose("auto")
    assert device == torch.device("cpu") and devices.precision(device) == torch.float32
    assert "answering on cpu (no CUDA device visible to torch)" in caplog.text
    assert devices.choose("cpu") == torch.device("cpu")


@no_gpu
@pytest.mark.parametrize("asked", ["cuda", "cuda:1"])
def test_a_gpu_that_is_not_there_is_an_error_not_a_silent_cpu(asked):
    with pytest.raises(devices.DeviceError) as raised:
        devices.choose(asked)
    message = str(raised.value)
    assert message.startswith(f"device {asked}: no CUDA device is visible here")
    assert "driver >= 580" in message and "\n" not in message


def test_a_device_that_is_no_device_is_refused_by_the_config():
    for config in (EvalConfig, PredictConfig):
        for wrong in ("gpu", "cuda:x", "mps", "cpu:0"):
            with pytest.raises(ValidationError, match="device"):
                config(device=wrong)
    with pytest.raises(ValueError, match="one of auto, cpu, cuda or cuda:N"):
        devices.choose("gpu")


@pytest.fixture(scope="module")
def tiny(small_dataset, tmp_path_factory):
    config = TrainConfig(
        data_dir=small_dataset,
        out_dir=tmp_path_factory.mktemp("device-runs"),
        run_name="d",
        max_steps=2,
        eval_rows=0,
    )
    return training.train(config)["run_dir"]


@no_gpu
def test_clis_refuse_a_missing_gpu_before_loading_and_metrics_say_the_device(
    tiny, small_dataset, tmp_path, capsys
):
    for main, argv in (
        (evaluate_cli.main, ["--model", tiny, "--data-dir", str(small_dataset)]),
        (
            predict_cli.main,
            ["--model", tiny, "--input", str(small_dataset), "--output", str(tmp_path / "a.csv")],
        ),
    ):
        code, line = cli_error(main, [*argv, "--device", "cuda"], capsys)
        assert code == 2 and line.startswith("error: device cuda: no CUDA device is visible here")
    assert not (tmp_path / "a.csv").exists()
    config = EvalConfig(
        model=tiny, data_dir=small_dataset, max_rows=10, rank=False, out_dir=tmp_path / "e"
    )
    result = evaluate.evaluate(config)
    assert result["device"] == "cpu"
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["device"] == "cpu"
