"""Models trained on one target (``--target channel`` or ``throughput``): evaluated, reported
and served on what they answer, with the other answer left empty, never invented."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from linklm.config import EvalConfig, TrainConfig
from linklm.evaluation import eval_report, evaluate
from linklm.model import examples, training
from linklm.serving import predict


@pytest.fixture(scope="module")
def single_target_runs(small_dataset, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("targets")
    runs = {}
    for target in ("channel", "throughput"):
        summary = training.train(
            TrainConfig(
                data_dir=small_dataset,
                out_dir=out,
                run_name=target,
                target=target,
                max_steps=40,
                batch_size=32,
                learning_rate=3e-3,
                warmup_steps=4,
                eval_rows=0,
                max_rows=1280,
            )
        )
        runs[target] = Path(summary["run_dir"])
    return runs


@pytest.mark.parametrize("target", ["channel", "throughput"])
def test_the_report_charts_what_a_single_target_model_answers(
    single_target_runs, small_dataset, tmp_path, target
):
    result = evaluate.evaluate(
        EvalConfig(
            model=str(single_target_runs[target]),
            data_dir=small_dataset,
            max_rows=30,
            tabular_rows=300,
            out_dir=tmp_path / "eval",
        )
    )
    written = eval_report.write_evaluation_report(result)
    charts = {key.split(":", 1)[1] for key in written if ":" in key}
    assert {"baselines", "slices"} <= charts
    assert ("confusion" in charts) == (target == "channel")
    assert ("throughput" in charts) == (target == "throughput")
    assert written["html"].exists()
    # the summary's tables are the model's too: no per-channel table of 0 % for a model that
    # answers no channel, no bandwidth table of blanks for one that answers no throughput
    summary = written["md"].read_text()
    assert ("## Most frequent channels" in summary) == (target == "channel")
    assert ("## Throughput error by bandwidth" in summary) == (target == "throughput")
    model = result["systems"][0]
    assert (model["channel"] is None) == (target == "throughput")
    assert (model["throughput"] is None) == (target == "channel")
    # docs/evaluation.md's recipes recompute the figures from predictions.csv, whatever the
    # target (a column empty in its first rows must not break them)
    for recipe in _recipes():
        code = recipe.replace(
            "runs/train/my-run/eval-test/predictions.csv",
            str(tmp_path / "eval" / "predictions.csv"),
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def _recipes() -> list[str]:
    """The Python blocks of docs/evaluation.md's 'Recomputing metrics yourself'."""
    doc = (ROOT / "docs" / "evaluation.md").read_text()
    section = doc.split("## Recomputing metrics yourself", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    return blocks


def test_a_throughput_model_answers_no_channel_and_no_fallback_invents_one(
    single_target_runs, small_dataset
):
    rows = examples.split_rows(small_dataset, "test", max_rows=8)
    for fallback in ("none", "heuristic"):
        predictor = predict.Predictor(str(single_target_runs["throughput"]), fallback=fallback)
        answered = predictor.answer(rows)
        assert answered["valid"].any(), "the model should answer some throughputs"
        assert answered["recommended_channel_mhz"].null_count() == rows.height
        assert answered["candidate_1_mhz"].null_count() == rows.height
        assert set(answered["source"]) <= {"model", "none"}
        answered_rows = answered.filter(answered["source"] == "model")
        assert answered_rows["expected_throughput_mbps"].null_count() == 0
