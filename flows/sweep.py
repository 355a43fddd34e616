"""The sweep flow: a few training settings, each trained and evaluated, ranked by a metric.

    python -m flows.sweep                                       # learning rates 3e-4, 1e-3, 3e-3
    python -m flows.sweep --grid mode=full,lora --grid learning_rate=1e-3,3e-3 --metric top1
    python -m flows.sweep --trial mode=lora,lora_r=16 --trial mode=full --max-steps 600

A trial sets any of the training settings (``linklm.config.TrainSettings``: mode,
learning_rate, lora_r, epochs, max_steps, batch_size, weight_decay, ...) over the sweep's own
(``train``). Every trial answers the same test rows. Writes sweep.json and report/report.{md,html} under out_dir.
"""

from __future__ import annotations

import argparse
import sys
import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_table_artifact

from flows.cli import ArgumentParser, add_model_options, fail, options_given, run_cli
from flows.experiments import (
    ExperimentError,
    check_fan_out,
    ensure_data,
    run_trials,
    trial_config,
)
from linklm import atomic, store
from linklm.config import SweepConfig, TrainConfig
from linklm.data import dataset
from linklm.evaluation import charts, evaluate, experiments, report, summaries
from linklm.model import models
from tasks import storage as t_storage

RESULT_FILE = "sweep.json"


def train_config(config: SweepConfig, index: int, trial: dict, stamp: str) -> TrainConfig:
    """One trial's run, under runs/<stamp>/ so a second sweep never collides with a first."""
    settings = config.train.model_dump() | trial
    if "epochs" in trial and "max_steps" not in trial:
        settings["max_steps"] = -1  # an epochs trial means epochs, not the sweep's step cap
    return trial_config(config, settings, config.out_dir / "runs" / stamp, f"trial-{index:02d}")


@flow(name="sweep")
def sweep_flow(config: SweepConfig = SweepConfig()) -> dict:  # noqa: B008 (UI form default)
    """Train and evaluate every trial; the results table is ranked by ``config.metric``."""
    logger = get_run_logger()
    ensure_data(config)
    results, result = [], None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    trials = config.expanded()
    runs = [train_config(config, index, trial, stamp) for index, trial in enumerate(trials)]
    for trial, (row, evaluated) in zip(trials, run_trials(config, runs), strict=True):
        result = evaluated or result  # the baselines' rows are the same for every trial
        if evaluated is None:
            logger.error("%s failed: %s", experiments.trial_name(trial), row["error"])
        results.append(
            {"name": experiments.trial_name(trial), "settings": trial, "error": None} | row
        )
        shown = summaries.metric_text(config.metric, row[config.metric])
        logger.info("%s: %s = %s", experiments.trial_name(trial), config.metric, shown)
    if result is None:
        raise ExperimentError(f"every trial failed; the first: {results[0]['error']}")
    results = experiments.ranked(results, config.metric)
    paths = report.write_report(
        config.out_dir / "report",
        "Sweep",
        experiments.sweep_markdown(config, results, result["rows"]),
        # no chart when no trial gave a usable answer for the metric (the table says so)
        {"sweep": charts.sweep_bars(results, config.metric, in_given_order=True)}
        if any(r[config.metric] is not None for r in results)
        else {},
    )
    summary = {
        "config": config.model_dump(mode="json"),
        "metric": config.metric,
        "results": results,
        "references": evaluate.references(result),
        "report": {k: str(v) for k, v in paths.items()},
    }
    atomic.write_json(config.out_dir / RESULT_FILE, summary)
    summary["artifacts"] = t_storage.publish_folder(config.out_dir, config.artifacts_url, "sweep")
    create_table_artifact(
        key="sweep",
        table=[{k: v for k, v in r.items() if k != "settings"} for r in results],
        description=f"trials ranked by {config.metric}",
    )
    report_link = store.file_link(paths["html"], config.out_dir, summary["artifacts"])
    create_link_artifact(key="sweep-report", link=report_link, link_text=report_link)
    return summary


def _settings(text: str) -> dict:
    """'mode=lora,lora_r=16' -> {'mode': 'lora', 'lora_r': '16'} (pydantic converts)."""
    out = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            fail(f"{part!r}: expected setting=value")
        out[key.strip()] = value.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--grid", action="append", default=[], help="setting=v1,v2,... (repeat)")
    parser.add_argument("--trial", action="append", default=[], help="setting=v,setting=v (repeat)")
    add_model_options(parser, SweepConfig, skip=("grid", "trials"))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    plain = {k: v for k, v in vars(args).items() if k not in ("grid", "trial")}
    values = options_given(SweepConfig, argparse.Namespace(**plain))  # --max-rows none: all
    if args.grid:
        grid = {}
        for spec in args.grid:
            key, sep, options = spec.partition("=")
            if not sep:
                fail(f"--grid {spec!r}: expected setting=v1,v2")
            grid[key.strip()] = [v.strip() for v in options.split(",") if v.strip()]
        values["grid"] = grid
    if args.trial:
        values["trials"] = [_settings(t) for t in args.trial]
    config = SweepConfig(**values)
    check_fan_out(config)  # fail before Prefect starts (and before data is built)
    models.resolve(config.model)
    dataset.check_buildable(config.data_dir)
    summary = sweep_flow(config)
    for i, r in enumerate(summary["results"], start=1):
        failed = f" (failed: {r['error']})" if r.get("error") else ""
        shown = summaries.metric_text(summary["metric"], r[summary["metric"]])
        print(f"{i}. {r['name']}: {summary['metric']} = {shown}{failed}")
    print(f"report: {summary['report']['html']}")
    return 1 if any(r.get("error") for r in summary["results"]) else 0


if __name__ == "__main__":
    run_cli(main)
