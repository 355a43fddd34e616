"""The report of one evaluation: its markdown summary and charts, written by ``report``."""

from __future__ import annotations

import json
from pathlib import Path

from linklm import charts, predictions, report, summaries
from linklm.train import HISTORY_FILE

REPORT_DIR = "report"


def evaluation_charts(result: dict, model_predictions) -> dict:
    out = {}
    history = Path(result["run_dir"]) / HISTORY_FILE if result.get("run_dir") else None
    if history is not None and history.exists():
        losses = json.loads(history.read_text())
        if any("loss" in h or "eval_loss" in h for h in losses):
            out["training"] = charts.training_curve(losses)
    return out | {
        "baselines": charts.baseline_bars(result["systems"]),
        "confusion": charts.confusion_heatmap(result["confusion_by_sub_band"]),
        "throughput": charts.throughput_scatter(model_predictions),
        "slices": charts.slice_bars(result["slices"]),
    }


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
