"""The learning-curve flow: how the model improves with more training rows.

    python -m flows.learning_curve --sizes 1000,3000,10000 --epochs 3
    python -m flows.learning_curve --data-dir runs/data --sizes 2000,8000,32000 --mode lora

Each size trains a model (train subflow) on the first N training rows and evaluates it
(evaluate subflow) on the same test rows; the baselines and the oracle are drawn as
reference lines. Writes learning_curve.json and report/report.{md,html} under out_dir.
"""

from __future__ import annotations

import sys
import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_table_artifact

from flows.cli import ArgumentParser, add_model_options, model_from_options, run_cli
from flows.experiments import (
    ExperimentError,
    check_fan_out,
    ensure_data,
    run_trials,
    trial_config,
)
from linklm import atomic, store
from linklm.config import LearningCurveConfig, TrainConfig
from linklm.data import dataset
from linklm.evaluation import charts, evaluate, experiments, report
from linklm.model import models
from tasks import storage as t_storage

RESULT_FILE = "learning_curve.json"


def train_config(config: LearningCurveConfig, size: int, stamp: str) -> TrainConfig:
    """One point's run, under runs/<stamp>/ so a second curve never collides with a first."""
    settings = config.train.model_dump() | {"max_rows": size}
    return trial_config(config, settings, config.out_dir / "runs" / stamp, f"rows-{size}")


@flow(name="learning-curve")
def learning_curve_flow(config: LearningCurveConfig = LearningCurveConfig()) -> dict:  # noqa: B008
    """Train and evaluate per size; one table and one chart across sizes."""
    logger = get_run_logger()
    ensure_data(config)
    points, result = [], None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = [train_config(config, size, stamp) for size in config.sizes]
    for size, (row, evaluated) in zip(config.sizes, run_trials(config, runs), strict=True):
        result = evaluated or result  # the baselines' rows are the same for every point
        if evaluated is None:
            row["train_rows"] = size
            logger.error("%d rows failed: %s", size, row["error"])
        points.append({"error": None} | row | {"system": evaluate.MODEL})
        logger.info("%d rows: %s", size, experiments.figures_text(row))
        if row["train_rows"] < size:
            logger.warning(
                "only %d training rows exist; larger sizes repeat them", row["train_rows"]
            )
    if result is None:
        raise ExperimentError(f"every point failed; the first: {points[0]['error']}")
    refs = evaluate.references(result)
    text = experiments.learning_curve_markdown(config, points, refs, result["rows"])
    paths = report.write_report(
        config.out_dir / "report",
        "Learning curve",
        text,
        {
            f"learning_curve_{metric}": charts.learning_curve(points, refs, metric)
            for metric in ("top1", "top1_ranked", "throughput_mae")
            if any(p[metric] is not None for p in points)  # none: no usable answers yet
        },
    )
    summary = {
        "config": config.model_dump(mode="json"),
        "points": points,
        "references": refs,
        "report": {k: str(v) for k, v in paths.items()},
    }
    atomic.write_json(config.out_dir / RESULT_FILE, summary)
    summary["artifacts"] = t_storage.publish_folder(
        config.out_dir, config.artifacts_url, "learning-curve"
    )
    create_table_artifact(key="learning-curve", table=points, description="metrics per size")
    report_link = store.file_link(paths["html"], config.out_dir, summary["artifacts"])
    create_link_artifact(key="learning-curve-report", link=report_link, link_text=report_link)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m flows.learning_curve", description=__doc__.split("\n")[0]
    )
    add_model_options(parser, LearningCurveConfig)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config = model_from_options(LearningCurveConfig, args)
    check_fan_out(config)  # fail before Prefect starts (and before data is built)
    models.resolve(config.model)
    dataset.check_buildable(config.data_dir)
    summary = learning_curve_flow(config)
    for p in summary["points"]:
        failed = f" (failed: {p['error']})" if p["error"] else ""
        print(f"{p['train_rows']:>8} rows: {experiments.figures_text(p)}{failed}")
    print(f"report: {summary['report']['html']}")
    return 1 if any(p["error"] for p in summary["points"]) else 0


if __name__ == "__main__":
    run_cli(main)
