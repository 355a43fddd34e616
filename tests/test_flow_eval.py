"""The evaluate, demo, learning-curve and sweep flows under the real Prefect test harness."""

import json
import re
from pathlib import Path

import polars as pl
import pytest
from conftest import artifact_keys, run_module
from prefect import get_client

from linklm.config import EvalConfig, LearningCurveConfig, SweepConfig, TrainConfig, TrainSettings
from linklm.evaluation import evaluate, metrics, report
from linklm.model import examples, training

TINY_TRAIN = {"max_steps": 8, "batch_size": 16, "eval_rows": 16, "warmup_steps": 1}
LOGGED = {"logging_steps": 2, "eval_steps": 4}


def _child_flow_names(flow_run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        flows = {f.id: f.name for f in client.read_flows()}
    return sorted(flows[r.flow_id] for r in runs if r.parent_task_run_id and r.id != flow_run_id)


@pytest.fixture(scope="module")
def trained_run(small_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    summary = training.train(
        TrainConfig(data_dir=small_dataset, out_dir=out, run_name="tiny", **TINY_TRAIN, **LOGGED)
    )
    return Path(summary["run_dir"])


def test_evaluate_flow_writes_predictions_metrics_report_and_artifacts(
    prefect_harness, small_dataset, trained_run
):
    from flows.evaluate import evaluate_flow

    result = evaluate_flow(
        EvalConfig(model=str(trained_run), data_dir=small_dataset, max_rows=60, tabular_rows=300)
    )
    out = trained_run / "eval-test"
    assert result["out_dir"] == str(out) and result["rows"] == 60
    names = [s["name"] for s in result["systems"]]
    assert names[0] == evaluate.MODEL and "physics oracle" in names
    assert "gradient-boosted trees (scikit-learn)" in names
    # every metric can be recomputed from the per-row CSV, outside the platform
    csv = pl.read_csv(out / "predictions.csv", schema_overrides={"pred_channel": pl.Int64})
    assert csv.height == 60 and {"scenario_id", "true_channel", "pred_channel", "raw"} <= set(
        csv.columns
    )
    top1 = (csv["pred_channel"] == csv["true_channel"]).fill_null(False).mean()
    assert result["systems"][0]["channel"]["top1"] == pytest.approx(top1)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["systems"] == result["systems"] and saved["dataset_sha256"]
    assert set(pl.read_parquet(out / "baseline_predictions.parquet")["system"]) == set(names[1:])
    html = Path(result["report"]["html"]).read_text()
    assert report.html_has_no_remote_scripts(html) and "Where the model stands" in html
    for chart in ("training", "baselines", "confusion", "slices"):
        assert Path(result["report"][f"png:{chart}"]).stat().st_size > 1000
    # the scatter has a point per answered throughput: none answered, no (empty) chart
    answered = result["systems"][0]["throughput"]["answered"]
    assert ("png:throughput" in result["report"]) == (answered > 0), answered
    assert {
        "evaluation-summary",
        "evaluation-systems",
        "evaluation-report",
        "evaluation-baselines-chart",
    } <= artifact_keys()


def test_latest_run_and_missing_model_are_clear(tmp_path, small_dataset, trained_run):
    with pytest.raises(evaluate.EvaluationError, match="no finished training run"):
        evaluate.model_source(EvalConfig(runs_dir=tmp_path))
    source, run = evaluate.model_source(EvalConfig(runs_dir=trained_run.parent))
    assert run == trained_run and source == str(trained_run / "model")
    with pytest.raises(evaluate.EvaluationError, match="pass out_dir"):
        evaluate.out_dir_of(EvalConfig(model="linklm-default"), None)
    cli = run_module("flows.evaluate", "--model", tmp_path / "nope", "--out-dir", tmp_path)
    assert cli.returncode == 2 and "no such model folder" in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1


def test_demo_flow_end_to_end_with_tiny_sizes(prefect_harness, tmp_path):
    from flows.demo import demo_flow
    from linklm.config import DemoConfig

    config = DemoConfig(
        out_dir=tmp_path / "demo",
        n_rows=1500,
        train=TrainSettings(max_steps=6, batch_size=16),
        eval_rows=16,
    )
    state = demo_flow(config, return_state=True)
    result = state.result()
    assert {"data", "train", "evaluate"} <= set(_child_flow_names(state.state_details.flow_run_id))
    assert (tmp_path / "demo" / "data" / "manifest.json").exists()
    assert (tmp_path / "demo" / "data" / "validation" / "report.md").exists()
    assert Path(result["report"]["html"]).exists() and result["demo_seconds"] > 0
    assert result["standing"]["channel"]["baseline"] == "quietest channel (scan)"
    assert {"baselines", "data-validation", "train-run", "evaluation-summary"} <= artifact_keys()


def test_learning_curve_flow_one_point_per_size(prefect_harness, small_dataset, tmp_path):
    from flows.learning_curve import learning_curve_flow

    config = LearningCurveConfig(
        data_dir=small_dataset,
        out_dir=tmp_path / "lc",
        sizes=(64, 256),
        train=TrainSettings(epochs=1, batch_size=32),
        eval_rows=16,
    )
    summary = learning_curve_flow(config)
    assert [p["train_rows"] for p in summary["points"]] == [64, 256]
    assert [p["steps"] for p in summary["points"]] == [2, 8]
    assert any(r["system"] == "physics oracle" and r["top1"] == 1.0 for r in summary["references"])
    saved = json.loads((tmp_path / "lc" / "learning_curve.json").read_text())
    assert saved["points"] == summary["points"]
    md = Path(summary["report"]["md"]).read_text()
    assert "| 64 |" in md and "charts/learning_curve_top1_ranked.png" in md
    assert "learning-curve" in artifact_keys()
    assert [p["error"] for p in summary["points"]] == [None, None]


def test_a_learning_curve_whose_every_point_fails_says_why(
    prefect_harness, small_dataset, tmp_path
):
    import torch

    from flows.experiments import ExperimentError
    from flows.learning_curve import learning_curve_flow

    if torch.cuda.is_available():
        pytest.skip("qlora trains here")
    config = LearningCurveConfig(
        data_dir=small_dataset,
        out_dir=tmp_path / "lc",
        sizes=(64, 128),
        train=TrainSettings(mode="qlora"),
    )
    with pytest.raises(ExperimentError, match="every point failed; the first: mode qlora needs"):
        learning_curve_flow(config)


def test_sweep_flow_ranks_trials_by_the_metric(prefect_harness, small_dataset, tmp_path):
    from flows.sweep import sweep_flow
    from linklm.evaluation.experiments import ranked

    config = SweepConfig(
        data_dir=small_dataset,
        out_dir=tmp_path / "sweep",
        grid={"mode": ["full", "lora"]},
        train=TrainSettings(max_rows=200, max_steps=4),
        eval_rows=16,
        metric="top1_ranked",  # ranking always answers; greedy answers may not parse yet
    )
    summary = sweep_flow(config)
    results = summary["results"]
    assert sorted(r["name"] for r in results) == ["mode=full", "mode=lora"]
    scores = [r["top1_ranked"] for r in results]
    assert scores == sorted(scores, reverse=True)
    (stamp,) = (tmp_path / "sweep" / "runs").iterdir()
    assert (stamp / "trial-01" / "adapter").exists()  # the lora trial
    assert "sweep" in artifact_keys()
    fake = [{"name": "a", "top1": 0.5}, {"name": "b", "top1": None}, {"name": "c", "top1": 0.9}]
    assert [r["name"] for r in ranked(fake, "top1")] == ["c", "a", "b"]
    fake = [{"name": "a", "throughput_mae": 9.0}, {"name": "b", "throughput_mae": 3.0}]
    assert [r["name"] for r in ranked(fake, "throughput_mae")] == ["b", "a"]  # lower is better
    fake = [
        {"name": "few", "throughput_mae": 1.0, "throughput_answered": 0.01},
        {"name": "all", "throughput_mae": 5.0, "throughput_answered": 1.0},
    ]  # an error over 1 % of the rows does not outrank one over all of them
    assert [r["name"] for r in ranked(fake, "throughput_mae")] == ["all", "few"]


def test_a_failed_trial_is_a_row_of_the_sweep_not_its_end(
    prefect_harness, small_dataset, tmp_path, capsys
):
    import torch

    from flows import sweep

    if torch.cuda.is_available():
        pytest.skip("qlora trains here: no trial fails")
    args = ["--data-dir", str(small_dataset), "--out-dir", str(tmp_path / "sweep")]
    args += ["--trial", "mode=qlora", "--trial", "mode=full", "--max-rows", "200"]
    # more rows asked than the test split has: the report says how many were evaluated
    args += ["--max-steps", "4", "--eval-rows", "100000", "--metric", "top1_ranked"]
    assert sweep.main(args) == 1  # a trial failed
    out = capsys.readouterr().out
    assert "mode=qlora: top1_ranked = — (failed: mode qlora needs a CUDA GPU" in out
    assert re.search(r"mode=full: top1_ranked = \d+\.\d %", out)  # percent, as the report
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    by_name = {r["name"]: r for r in saved["results"]}
    assert by_name["mode=full"]["top1_ranked"] is not None and by_name["mode=full"]["error"] is None
    assert saved["results"][-1]["name"] == "mode=qlora"  # no score: ranked last
    report_md = (tmp_path / "sweep" / "report" / "report.md").read_text()
    assert "## Failed trials" in report_md and "qlora needs a CUDA GPU" in report_md
    test_rows = examples.split_rows(small_dataset, "test").height
    assert f"evaluated on the same {test_rows:,} test rows" in report_md
    assert "| 2 | mode=qlora | — | — | — |" in report_md  # no steps, time or answers


def test_sweep_config_refuses_unknown_or_invalid_settings():
    with pytest.raises(ValueError, match="cannot sweep"):
        SweepConfig(grid={"dropout_everything": [1]})
    with pytest.raises(ValueError, match="greater than 0"):
        SweepConfig(trials=[{"learning_rate": -1}])
    assert len(SweepConfig(grid={"mode": ["full", "lora"], "lora_r": [4, 8]}).expanded()) == 4


def test_slice_columns_exist_in_the_data(small_dataset):
    from linklm.model import examples

    rows = examples.split_rows(small_dataset, "test", max_rows=5)
    assert set(metrics.SLICE_COLUMNS) <= set(rows.columns)
