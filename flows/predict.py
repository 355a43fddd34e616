"""The predict flow: a trained model answers every link of a file (batch scoring).

    python -m flows.predict --model runs/demo/train/demo-... --input links.csv --output runs/answers/links.csv
    python -m flows.predict --model runs/demo/train/demo-... --input runs/demo/data --split test
    python -m flows.predict --model champion --input s3://bucket/links.jsonl --output runs/answers/links.parquet
    echo '{"link_distance_m": 1200, ...}' | python -m flows.predict --model RUN_DIR --input -

Inputs need DATA_SPEC.md's input columns; scenario_id, the labels and rssi_dbm/snr_db are
optional and ignored. A row with a bad input is reported by scenario_id and skipped; the
exit code is 1 when any row was skipped or left without a usable answer (0 otherwise, 2 for
a usage error). Links on stdin are answered in-process, without starting Prefect, and the
answers print as JSON (one object per line).
"""

from __future__ import annotations

import json
import os
import sys

import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.cli import ArgumentParser, add_model_options, model_from_options, run_cli
from linklm.config import PredictConfig
from linklm.evaluation import summaries
from linklm.model import devices, models
from linklm.serving import predict, predict_io
from tasks import predict as t
from tasks import secrets


@flow(name="predict")
def predict_flow(config: PredictConfig = PredictConfig()) -> dict:  # noqa: B008 (UI form default)
    """Load the model once, answer every valid row, write the answers, report the rest."""
    logger = get_run_logger()
    predictor = t.load(config, secrets.hf_token())
    prediction = t.answer(predictor, config.input, config.split)
    output, skipped_file = t.write(prediction, config.output, config.input)
    summary = prediction.summary(output) | {"skipped_file": skipped_file}
    for problem in prediction.problems.head(20).to_dicts():
        logger.warning(
            "skipped scenario_id %s: %s: %s",
            problem["scenario_id"],
            problem["column"],
            problem["message"],
        )
    for row in prediction.out_of_range().head(20).to_dicts():
        logger.warning("answered, out of range: scenario_id %s: %s", *row.values())
    create_markdown_artifact(
        key="predict-summary",
        markdown=summaries.prediction_markdown(config.model, config.input, summary),
    )
    if prediction.problems.height:
        create_table_artifact(
            key="predict-skipped-rows",
            table=prediction.problems.head(1000).to_dicts(),
            description="rows with bad inputs, not answered",
        )
    logger.info("%d rows answered into %s", summary["answered"], output)
    return summary


def _print_problems(prediction: predict.Prediction) -> None:
    for p in prediction.problems.to_dicts():
        print(
            f"skipped scenario_id {p['scenario_id']} (row {p['row']}): {p['column']}: {p['message']}",
            file=sys.stderr,
        )
    _print_out_of_range(prediction.out_of_range())


def _print_out_of_range(rows: pl.DataFrame) -> None:
    for scenario_id, reason in rows.head(20).iter_rows():
        print(f"answered, out of range: scenario_id {scenario_id}: {reason}", file=sys.stderr)
    if rows.height > 20:
        print(f"... and {rows.height - 20} more (the out_of_range column)", file=sys.stderr)


def _answer_stdin(config: PredictConfig) -> int:
    """Links on stdin: answered in-process, with no Prefect start-up (so the token comes
    from HF_TOKEN only), printed as JSON lines unless --output names a file."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    predictor = predict.Predictor.from_config(config, token)
    prediction = predictor.predict_source("-")
    if "output" in config.model_fields_set and config.output != "-":
        predict_io.write_answers(prediction.rows, config.output, config.input)
        predict_io.write_skipped(prediction.problems, config.output)
    else:
        for row in prediction.rows.to_dicts():
            print(json.dumps(row))
    _print_problems(prediction)
    return 1 if prediction.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.predict", description=__doc__.split("\n")[0])
    add_model_options(parser, PredictConfig)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config = model_from_options(PredictConfig, args)
    # fail before Prefect starts, and before anything loads: an output that would replace
    # the input or cannot be written, an unknown or damaged model, an input that is not
    # there or lacks a column; 'champion' is read from the registry once, here, and the run
    # it names is the one served
    if config.input != "-" or "output" in config.model_fields_set:
        predict_io.check_output(config.output, config.input)
    config = config.model_copy(
        update={"model": predict.without_champion(config.model, config.registry)}
    )
    devices.choose(config.device, announce=False)  # a GPU asked for and not there: said now
    models.resolve(predict.model_folder(config.model))
    predict.check_source(config.input)
    if config.input == "-":
        return _answer_stdin(config)
    summary = predict_flow(config)
    print(  # to stderr when the answers themselves went to stdout
        f"{summary['answered']} rows answered ({summary['from_model']} by the model, "
        f"{summary['from_fallback']} by the fallback, {summary['unusable']} unusable), "
        f"{summary['skipped']} skipped for bad inputs, {summary['out_of_range']} out of the "
        f"model's range (out_of_range column) -> {summary['output']}",
        file=sys.stderr if config.output == "-" else sys.stdout,
    )
    if summary["skipped"]:
        where = f"; every one, with its reasons: {summary['skipped_file']}"
        print(
            f"skipped scenario_ids: {summary['skipped_ids'][:20]}"
            + (where if summary["skipped_file"] else ""),
            file=sys.stderr,
        )
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    run_cli(main)
