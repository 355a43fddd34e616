"""Training memory: per-model defaults that fit a 24 GB machine, and a run that will not fit
refused before its first step, with the figure and the flag to change."""

import json

import pytest
from conftest import tiny_train_config

from linklm.model import memory, training

GEMMA_270M = dict(parameters=268_098_176, trainable=737_280, layers=18, hidden=640, vocab=262_144)


@pytest.mark.parametrize(
    ("batch", "tokens", "measured_gb"),
    [(8, 110, 3.93), (4, 806, 7.3)],  # LoRA peaks measured here (linklm/model/memory.py)
)
def test_the_estimate_is_near_gemmas_measured_peaks(batch, tokens, measured_gb):
    peak = memory.estimate(
        **GEMMA_270M, batch=batch, tokens=tokens, answer_tokens=12, gradient_checkpointing=False
    )
    assert peak / memory.GB == pytest.approx(measured_gb, rel=0.25)


def test_gemmas_defaults_fit_where_batch_32_of_the_text_prompt_did_not():
    assert memory.default_batch_size("gemma-3-270m-gguf", "compact", cuda=False) == 8
    assert memory.default_batch_size("google/gemma-3-270m-it", "text", cuda=False) == 4
    assert memory.default_batch_size("linklm-default", "compact", cuda=False) == 32

    def peak(batch, checkpointing=False):
        return memory.estimate(
            **GEMMA_270M,
            batch=batch,
            tokens=806,
            answer_tokens=12,
            gradient_checkpointing=checkpointing,
        )

    assert peak(32) > 24 * memory.GB > peak(4)  # killed past 21 GB at batch 32, measured
    assert peak(32, checkpointing=True) < peak(32) / 4


def test_a_run_too_big_for_the_machine_is_refused_with_the_figure_and_the_flag(
    small_dataset, tmp_path
):
    huge = tiny_train_config(small_dataset, tmp_path, batch_size=5_000_000, max_steps=1)
    with pytest.raises(training.TrainingError) as refused:
        training.prepare(huge)
    message = str(refused.value)
    assert "needs an estimated" in message and "GB of memory" in message
    assert "--batch-size" in message and "--no-memory-check" in message
    fits = int(message.split("--batch-size ")[1].split()[0])
    assert 0 < fits < 5_000_000
    # the batch it names passes the check, and the check can be turned off
    training.prepare(huge.model_copy(update={"batch_size": fits}))
    training.prepare(huge.model_copy(update={"memory_check": False}))


def test_a_run_without_a_batch_size_records_the_models_default(small_dataset, tmp_path):
    config = tiny_train_config(small_dataset, tmp_path, batch_size=None, max_steps=2)
    assert config.batch_size is None
    summary = training.train(config)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["batch_size"] == 32 == summary.get("global_batch", 32)
