"""The report of one evaluation: its markdown summary and charts, written by ``report``."""

from __future__ import annotations

import json
from pathlib import Path

from linklm.evaluation import charts, predictions, report, summaries
from linklm.model.runs import HISTORY_FILE

REPORT_DIR = "report"


def evaluation_charts(result: dict, model_predictions) -> dict:
    """The charts of what the model answers: a model trained on one target (channel or
    throughput) gets no chart of the other, and its slices show the metric it has."""
    target = result["prompt_format"]["target"]  # what the model was trained to answer
    answers_channel, answers_throughput = target != "throughput", target != "channel"
    out = {}
    history = Path(result["run_dir"]) / HISTORY_FILE if result.get("run_dir") else None
    if history is not None and history.exists():
        losses = json.loads(history.read_text())
        if charts.loss_rows(losses):  # none: a run too short to log, or only NaN losses
            out["training"] = charts.training_curve(losses)
    out["baselines"] = charts.baseline_bars(result["systems"])
    if answers_channel:
        out["confusion"] = charts.confusion_heatmap(result["confusion_by_sub_band"])
    answered_throughput = model_predictions["pred_throughput"].drop_nulls().drop_nans().len()
    if answers_throughput and answered_throughput:  # no point to place: no chart
        out["throughput"] = charts.throughput_scatter(model_predictions)
    slice_metric = "top1" if answers_channel else "throughput_mae"
    if any(row.get(slice_metric) is not None for row in result["slices"]):  # none: no answer
        out["slices"] = charts.slice_bars(result["slices"], slice_metric)
    return out


def write_evaluation_report(result: dict, out_dir: Path | None = None) -> dict[str, Path]:
    """report.md, report.html and the chart images under <evaluation folder>/report."""
    eval_dir = Path(result["out_dir"])
    frame = predictions.read(eval_dir)
    return report.write_report(
        out_dir or eval_dir / REPORT_DIR,
        f"Evaluation of {result['model']}",
        summaries.evaluation_markdown(result),
        evaluation_charts(result, frame),
    )
