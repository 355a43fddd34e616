"""Rows made elsewhere: import (contract per row, physics reported), scoring outside
predictions, and training on a mix of generated and imported folders."""

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import cli_error, tiny_train_config

from flows import data as data_cli
from flows import evaluate as evaluate_cli
from linklm.config import EvalConfig, GenerationConfig, TrainConfig
from linklm.data import dataset, export, imports, validate
from linklm.errors import DatasetError, SchemaError
from linklm.evaluation import evaluate as evaluation
from linklm.evaluation.outside import PredictionsError
from linklm.model import examples, training


@pytest.fixture(scope="module")
def seed_csv(tmp_path_factory) -> Path:
    """400 generated rows as the seed's CSV (what the data flow exports)."""
    folder = tmp_path_factory.mktemp("seed") / "data"
    dataset.build(folder, GenerationConfig(n_rows=400, chunk_size=200, seed=11))
    export.export_csv_zip(folder)
    return folder / export.EXPORT_DIR / export.CSV_NAME


def _seed_text(seed_csv: Path) -> pl.DataFrame:
    return pl.read_csv(seed_csv, infer_schema=False)


def _with_cell(text: pl.DataFrame, row: int, column: str, value: str) -> pl.DataFrame:
    return text.with_columns(
        pl.when(pl.int_range(pl.len()) == row)
        .then(pl.lit(value))
        .otherwise(pl.col(column))
        .alias(column)
    )


def test_the_seed_csv_imports_as_a_dataset_and_again_to_the_same_manifest(seed_csv, tmp_path):
    out = tmp_path / "survey"
    manifest = imports.import_file(seed_csv, out)
    assert manifest["rows"] == 400 and dataset.verify(out) == []
    assert manifest["generation"] is None and manifest["import"]["rows_quarantined"] == 0
    physics = manifest["import"]["physics"]
    assert physics["agree_share"] == 1.0 and physics["rows_checked"] == 400
    # the rows are the generated ones, value for value
    original = dataset.scan(seed_csv.parent.parent).collect().sort("scenario_id")
    assert dataset.scan(out).collect().sort("scenario_id").equals(original)
    assert imports.import_file(seed_csv, out) == manifest  # same file: same manifest
    # a folder holds one file's import: another file is refused unless overwritten
    other = tmp_path / "other.csv"
    _with_cell(_seed_text(seed_csv), 0, "tx_power_dbm", "20.0").write_csv(other)
    with pytest.raises(DatasetError, match="another config or generator"):
        imports.import_file(other, out)
    assert imports.import_file(other, out, overwrite=True)["import"]["file"] == "other.csv"


def test_labels_that_disagree_with_the_physics_are_reported_not_refused(seed_csv, tmp_path):
    text = _seed_text(seed_csv)
    tput = float(text["expected_throughput_mbps"][3])
    text = _with_cell(text, 3, "expected_throughput_mbps", f"{tput + 40:.2f}")
    first, second = sorted(json.loads(text["available_channels_mhz"][5]))[:2]
    wrong = second if int(text["recommended_channel_mhz"][5]) == first else first
    text = _with_cell(text, 5, "recommended_channel_mhz", str(wrong))
    survey = tmp_path / "survey.csv"
    text.write_csv(survey)

    manifest = imports.import_file(survey, tmp_path / "kept")
    physics = manifest["import"]["physics"]
    assert manifest["rows"] == 400 and manifest["import"]["rows_quarantined"] == 0
    assert physics["agree_share"] == pytest.approx(398 / 400)
    assert physics["throughput_off_mbps"]["rows"] >= 1
    assert physics["throughput_off_mbps"]["max"] >= 39.9
    assert physics["channel_off_mhz"]["rows"] == 1
    report = (tmp_path / "kept" / "import" / "report.md").read_text()
    assert "rows that disagree are kept" in report and "99.5% have every label" in report
    # the folder's own validation keeps them too: warnings, not quarantined rows
    summary = validate.validate_path(tmp_path / "kept").summary()
    assert summary["bad_rows"] == 0 and summary["physics_mode"] == "report"

    strict = imports.import_file(survey, tmp_path / "strict", physics_mode="enforce")
    assert strict["rows"] == 398 and strict["import"]["rows_quarantined"] == 2
    quarantined = pl.read_csv(tmp_path / "strict" / "import" / "quarantine.csv")
    assert set(quarantined["scenario_id"].to_list()) == {
        int(text["scenario_id"][3]),
        int(text["scenario_id"][5]),
    }


def test_bad_rows_are_quarantined_by_scenario_id_and_the_rest_kept(seed_csv, tmp_path):
    text = _seed_text(seed_csv)
    text = _with_cell(text, 2, "weather_condition", "LATIN1")  # a byte that is not UTF-8
    text = _with_cell(text, 7, "tx_power_dbm", "loud")  # not a number
    text = _with_cell(text, 9, "environment_type", "Moon")  # not a category
    text = _with_cell(text, 11, "scenario_id", text["scenario_id"][12])  # a duplicate
    survey = tmp_path / "survey.csv"
    survey.write_bytes(text.write_csv().encode().replace(b"LATIN1", b"Cl\xe9ar"))
    ids = text["scenario_id"].cast(pl.Int64)

    manifest = imports.import_file(survey, tmp_path / "out")
    assert manifest["import"]["rows_read"] == 400
    assert manifest["rows"] == 395 and manifest["import"]["rows_quarantined"] == 5
    quarantined = pl.read_csv(tmp_path / "out" / "import" / "quarantine.csv")
    assert sorted(quarantined["scenario_id"].to_list()) == sorted(
        [ids[2], ids[7], ids[9], ids[12], ids[12]]
    )
    problems = dict(zip(quarantined["row"], quarantined["problems"], strict=True))
    assert "not UTF-8" in problems[2] and "not a number" in problems[7]
    kept = dataset.scan(tmp_path / "out").collect()["scenario_id"]
    assert not kept.is_in([ids[2], ids[7], ids[9], ids[12]]).any() and kept.len() == 395

    # the validator reads the same file instead of refusing it for the one byte
    result = validate.validate_path(survey, tmp_path / "report")
    assert result.bad_rows == 5 and result.rows == 400

    # a threshold makes too many bad rows an error, as the data flow's does
    with pytest.raises(Exception, match=r"5 of 400 rows \(1.25%\) break the contract"):
        imports.import_file(survey, tmp_path / "strict", max_error_rate=0.01)


def test_jsonl_and_parquet_import_with_a_broken_line_kept_apart(seed_csv, tmp_path):
    rows = dataset.scan(seed_csv.parent.parent).collect().sort("scenario_id").head(50)
    parquet = tmp_path / "links.parquet"
    rows.write_parquet(parquet)
    assert imports.import_file(parquet, tmp_path / "pq")["rows"] == 50

    lines = [json.dumps(r) for r in export.to_seed_csv_frame(rows).to_dicts()]
    lines[4] = '{"scenario_id": 4, "broken'
    lines[6] = json.dumps(json.loads(lines[6]) | {"comment": "extra"})
    jsonl = tmp_path / "links.jsonl"
    jsonl.write_text("\n".join(lines) + "\n\n")
    manifest = imports.import_file(jsonl, tmp_path / "jl")
    assert manifest["rows"] == 48 and manifest["import"]["rows_quarantined"] == 2
    problems = pl.read_csv(tmp_path / "jl" / "import" / "problems.csv")
    line = problems.filter(pl.col("row") == 4)
    assert line.height == 1 and "line 5: not JSON" in line["message"][0]
    assert "not a DATA_SPEC.md column" in problems.filter(pl.col("row") == 6)["message"][0]


def test_files_that_are_no_rows_at_all_are_one_clear_error(tmp_path):
    with pytest.raises(SchemaError, match="file not found"):
        imports.import_file(tmp_path / "nope.csv", tmp_path / "out")
    odd = tmp_path / "links.xlsx"
    odd.write_bytes(b"PK")
    with pytest.raises(SchemaError, match="unknown kind of file '.xlsx'"):
        imports.import_file(odd, tmp_path / "out")
    headless = tmp_path / "h.csv"
    headless.write_text("a,b\n1,2\n")
    with pytest.raises(SchemaError, match="missing column"):
        imports.import_file(headless, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_import_cli_runs_the_flow_and_the_folder_trains_and_evaluates(
    prefect_harness, seed_csv, small_dataset, tmp_path, capsys
):
    out = tmp_path / "survey"
    assert data_cli.main(["import", str(seed_csv), "--out-dir", str(out)]) == 0
    said = capsys.readouterr().out
    assert "imported" in said and "400 of 400 rows kept" in said and "100.0%" in said
    for name in ("export/links.csv", "shards/shards.json", "validation/report.md"):
        assert (out / name).exists(), name
    assert sum(json.loads((out / "shards/shards.json").read_text())["rows"].values()) == 400
    code, message = cli_error(data_cli.main, ["import", str(tmp_path / "no.csv")], capsys)
    assert code != 0 and "file not found" in message

    # a mix: the small generated dataset with the imported rows three times over
    config = tiny_train_config(
        small_dataset, tmp_path / "runs", mix=(f"{out}:3",), max_steps=4, eval_steps=4
    )
    summary = training.train(config)
    survey_train = examples.split_rows(out, "train").height
    mixed = summary[examples.MIX_KEY]
    assert mixed[0]["rows_added"] == 3 * survey_train and mixed[0]["weight"] == 3.0
    base = examples.split_rows(small_dataset, "train", 800).height
    assert summary["train_rows"] >= base + 3 * survey_train  # augmentation may add more
    # an evaluation on the imported folder's train split knows the run trained on it
    run = json.loads((Path(summary["run_dir"]) / "run.json").read_text())
    manifest = dataset.read_manifest(out)
    train_ids = examples.split_rows(out, "train")["scenario_id"]
    assert examples.training_rows_among(run, manifest, train_ids) == train_ids.len()
    test_ids = examples.split_rows(out, "test")["scenario_id"]
    assert examples.training_rows_among(run, manifest, test_ids) == 0


def test_mix_entries_are_checked_before_anything_loads(tmp_path):
    assert TrainConfig(mix=("runs/s:2.5", "runs/t")).mix_sources == [
        (Path("runs/s"), 2.5),
        (Path("runs/t"), 1.0),
    ]
    with pytest.raises(ValueError, match="weight must be above 0"):
        TrainConfig(mix=("runs/s:0",))
    assert examples.weighted(pl.DataFrame({"a": range(10)}), 2.5, 0).height == 25


def test_outside_predictions_are_scored_like_a_model(
    prefect_harness, seed_csv, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    folder = seed_csv.parent.parent
    test_rows = examples.split_rows(folder, "test")
    truth_ch = test_rows["recommended_channel_mhz"]
    # right on every row but two (one wrong channel, one a word), throughput off by 10
    answers = pl.DataFrame(
        {
            "scenario_id": test_rows["scenario_id"],
            "recommended_channel_mhz": truth_ch.cast(pl.String),
            "expected_throughput_mbps": test_rows["expected_throughput_mbps"] + 10,
        }
    )
    answers = _with_cell(answers, 0, "recommended_channel_mhz", "1")
    answers = _with_cell(answers, 1, "recommended_channel_mhz", "dunno")
    extra = pl.DataFrame(
        {
            "scenario_id": [10**9],
            "recommended_channel_mhz": ["5180"],
            "expected_throughput_mbps": [1.0],
        }
    )
    path = tmp_path / "answers.csv"
    pl.concat([answers.slice(0, answers.height - 1), extra]).write_csv(path)

    argv = ["--predictions", str(path), "--truth", str(folder), "--split", "test"]
    argv += ["--out-dir", str(tmp_path / "eval"), "--max-rows", "none"]
    assert evaluate_cli.main(argv) == 0
    said = capsys.readouterr().out
    assert "1 rows had no prediction and 1 an unusable value" in said
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    n = test_rows.height
    model = next(s for s in result["systems"] if s["kind"] == "model")
    assert model["name"] == "predictions (answers.csv)"
    assert model["channel"]["top1"] == pytest.approx((n - 3) / n)  # two wrong, one missing
    assert model["throughput"]["mae"] == pytest.approx(10.0, abs=1e-6)
    given = result["predictions"]
    assert given["not_in_split"] == 1 and given["split_rows_without_prediction"] == 1
    assert given["unusable_values"] == 1
    assert {s["name"] for s in result["systems"]} >= {"quietest channel (scan)", "physics oracle"}
    assert result["standing"]["channel"]["model"] == model["channel"]["top1"]
    assert (tmp_path / "eval" / "report" / "report.html").exists()

    twice = tmp_path / "twice.csv"
    pl.concat([answers.head(2), answers.head(1)]).write_csv(twice)
    config = EvalConfig(data_dir=folder, predictions=twice, out_dir=tmp_path / "e2")
    with pytest.raises(PredictionsError, match="has more than one prediction"):
        evaluation.evaluate(evaluation.check(config))
    code, message = cli_error(evaluate_cli.main, ["--predictions", str(twice)], capsys)
    assert code != 0 and "runs/data: no dataset" in message


def test_a_share_short_of_all_is_never_printed_as_100_percent():
    from linklm.data.rules import share_percent

    assert share_percent(1.0) == "100.0%" and share_percent(0.0) == "0.0%"
    assert share_percent(2997 / 2998) == ">99.9%" and share_percent(1 / 2998) == "<0.1%"
    assert share_percent(398 / 400) == "99.5%"
