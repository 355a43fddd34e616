"""The evaluate flow: model + baselines + oracle on a split -> metrics, predictions, report.

    python -m flows.evaluate                                   # the newest run under runs/train
    python -m flows.evaluate --model runs/train/my-run --split test --max-rows 5000
    python -m flows.evaluate --model ./some/model/folder --out-dir runs/eval/some-model
    python -m flows.evaluate --predictions answers.csv --truth runs/survey --split test

Or ``evaluate_flow(EvalConfig(...))``. Writes predictions.parquet/.csv, baseline_predictions
.parquet and metrics.json into the evaluation folder, and report/report.{md,html} with the
charts; publishes the summary, the systems table, a link and a chart as Prefect artifacts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, get_run_logger

from flows.cli import ArgumentParser, add_model_options, model_from_options, run_cli
from linklm.config import EvalConfig
from linklm.evaluation import evaluate
from tasks import evaluate as t
from tasks import secrets
from tasks import storage as t_storage


@flow(name="evaluate")
def evaluate_flow(config: EvalConfig = EvalConfig()) -> dict:  # noqa: B008 (UI form default)
    """Evaluate a model against the baselines; returns metrics.json's content plus paths."""
    logger = get_run_logger()
    result = t.evaluate_model(config, secrets.hf_token())
    paths = t.render_report(result)
    result["artifacts"] = t_storage.publish_folder(
        Path(result["out_dir"]), config.artifacts_url, "evaluate"
    )
    t.publish(result, paths, published=result["artifacts"])
    result["report"] = {k: str(v) for k, v in paths.items()}
    logger.info("report: %s", paths["html"])
    return result


def print_result(result: dict) -> None:
    model = next(s for s in result["systems"] if s["kind"] == "model")
    ch, tp = model.get("channel") or {}, model.get("throughput") or {}
    parts = []
    if ch:
        parts.append(f"channel top-1 {100 * ch['top1']:.1f} %")
    if tp and tp.get("mae") is not None:
        parts.append(f"throughput MAE {tp['mae']:.2f} Mbps")
    print(f"{result['model']} on {result['rows']} {result['split']} rows: " + ", ".join(parts))
    given = result.get("predictions")
    if given and (given["split_rows_without_prediction"] or given["unusable_values"]):
        print(
            f"  {given['split_rows_without_prediction']} rows had no prediction and "
            f"{given['unusable_values']} an unusable value: scored as unanswered"
        )
    print(f"report: {result['report']['html']}")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.evaluate", description=__doc__.split("\n")[0])
    add_model_options(parser, EvalConfig)
    parser.add_argument(
        "--truth",
        type=Path,
        help="with --predictions: the dataset folder they are of (= --data-dir)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.truth is not None:
        if args.data_dir is not None:
            parser.error("give --truth or --data-dir, not both")
        args.data_dir = str(args.truth)
    config = model_from_options(EvalConfig, args)
    config = evaluate.check(config)  # fail before Prefect starts
    print_result(evaluate_flow(config))
    return 0


if __name__ == "__main__":
    run_cli(main)
