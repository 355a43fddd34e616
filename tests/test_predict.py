"""Predict, model cards and publish --dry-run on a tiny trained run (real transformers)."""

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import flip_last_byte, run_module

from flows import predict as predict_cli
from flows.cli import run_cli
from linklm.config import EvalConfig, TrainConfig
from linklm.data import export
from linklm.evaluation import card
from linklm.model import models, training
from linklm.serving import predict, predict_io, publish


@pytest.fixture(scope="module")
def run_dir(small_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict-runs")
    summary = training.train(
        TrainConfig(
            data_dir=small_dataset,
            out_dir=out,
            run_name="p",
            max_steps=40,
            batch_size=32,
            eval_rows=16,
            warmup_steps=4,
            learning_rate=3e-3,
        )
    )
    card.write_card(Path(summary["run_dir"]))  # as the train flow does after saving the run
    return Path(summary["run_dir"])


@pytest.fixture(scope="module")
def seed_csv(small_dataset, tmp_path_factory) -> Path:
    """The seed-format CSV of 40 rows, as another program would write it."""
    out = tmp_path_factory.mktemp("csv")
    frame = export.to_seed_csv_frame(
        pl.read_parquet(next((small_dataset / "chunks").glob("*.parquet"))).head(40)
    )
    path = out / "links.csv"
    frame.write_csv(path)
    return path


@pytest.fixture(scope="module")
def predictor(run_dir) -> predict.Predictor:
    return predict.Predictor(str(run_dir))


def test_predicts_a_seed_format_csv_without_labels(predictor, seed_csv):
    text = pl.read_csv(seed_csv, infer_schema=False).drop(
        "recommended_channel_mhz", "expected_throughput_mbps", "rssi_dbm", "snr_db"
    )
    result = predictor.predict(text)
    rows = result.rows
    assert rows.height == 40 and result.problems.height == 0
    assert rows["scenario_id"].to_list() == text["scenario_id"].cast(pl.Int64).to_list()
    available = [json.loads(a) for a in text["available_channels_mhz"].to_list()]
    for row, chans in zip(rows.to_dicts(), available, strict=True):
        assert {row["candidate_1_mhz"], row["candidate_2_mhz"], row["candidate_3_mhz"]} <= set(
            chans
        )
        assert row["candidate_1_score"] >= row["candidate_2_score"] >= row["candidate_3_score"]
        if row["valid"]:
            assert row["recommended_channel_mhz"] in chans and row["source"] == "model"
        else:
            assert row["recommended_channel_mhz"] is None and row["source"] == "none"


def test_labels_and_leaky_columns_do_not_change_answers(predictor, seed_csv):
    full = pl.read_csv(seed_csv, infer_schema=False)
    scrambled = full.with_columns(
        rssi_dbm=pl.lit("-20.0"), snr_db=pl.lit("60.0"), recommended_channel_mhz=pl.lit("4900")
    )
    a = predictor.predict(full).rows
    b = predictor.predict(scrambled).rows
    assert a.equals(b)


def test_bad_rows_are_reported_by_id_and_skipped(predictor, seed_csv):
    text = pl.read_csv(seed_csv, infer_schema=False)
    ids = text["scenario_id"].to_list()
    text = text.with_columns(
        tx_power_dbm=pl.when(pl.col("scenario_id") == ids[2])
        .then(pl.lit("loud"))
        .otherwise(pl.col("tx_power_dbm")),
        link_distance_m=pl.when(pl.col("scenario_id") == ids[7])
        .then(pl.lit("NaN"))
        .otherwise(pl.col("link_distance_m")),
    )
    result = predictor.predict(text)
    assert result.rows.height == 38 and result.failed
    assert sorted(result.skipped_ids()) == sorted(int(i) for i in (ids[2], ids[7]))
    columns = set(result.problems["column"])
    assert columns == {"tx_power_dbm", "link_distance_m"}
    bad_ids = pl.col("scenario_id").is_in([ids[2], ids[7]])
    unreadable = text.with_columns(
        scenario_id=pl.when(bad_ids).then(pl.lit("?")).otherwise("scenario_id")
    )
    both = predictor.predict(unreadable)
    assert both.skipped_ids() == [None] and both.skipped_rows == 2  # rows, not distinct ids
    with pytest.raises(Exception, match="missing input column"):
        predictor.predict(text.drop("spectral_scan_dbm"))


def test_every_skipped_row_is_listed_beside_the_answers(predictor, seed_csv, tmp_path):
    """The summary names a few skipped ids; a file beside the output lists them all with
    their reasons (100,000 skipped rows were once only counted). A later run with none
    skipped removes the list, so it never describes other answers."""
    text = pl.read_csv(seed_csv, infer_schema=False)
    bad = text.with_columns(tx_power_dbm=pl.lit("loud"))  # every row skipped
    result = predictor.predict(bad.vstack(text))
    output = str(tmp_path / "answers.csv")
    written = predict_io.write_skipped(result.problems, output)
    assert written == str(tmp_path / "answers.skipped.csv")
    listed = pl.read_csv(written)
    assert listed.height == 40 and listed.columns == [
        "row",
        "scenario_id",
        "column",
        "check",
        "message",
    ]
    assert set(listed["column"]) == {"tx_power_dbm"} and listed["message"][0].startswith(
        "not a number"
    )
    assert predict_io.skipped_path("s3://b/answers.parquet?v=1") == "s3://b/answers.skipped.csv?v=1"
    assert predict_io.write_skipped(predictor.predict(text).problems, output) is None
    assert not Path(written).exists()


def test_a_large_batch_is_answered_in_blocks_with_progress(
    predictor, seed_csv, monkeypatch, caplog
):
    """Answering 100,000 rows ran 2.5 minutes without a word. Blocks give a progress line
    each and bound the model's working memory; the answers are the same as in one go."""
    text = pl.read_csv(seed_csv, infer_schema=False)
    whole = predictor.predict(text).rows
    monkeypatch.setattr(predict, "BLOCK_ROWS", 16)
    with caplog.at_level("INFO", logger="linklm.serving.predict"):
        blocks = predictor.predict(text).rows
    scores = [c for c in whole.columns if c.endswith("_score")]  # padding differs by batch
    assert blocks.drop(scores).equals(whole.drop(scores))
    assert np.allclose(blocks.select(scores).to_numpy(), whole.select(scores).to_numpy(), atol=1e-3)
    progress = [r.getMessage() for r in caplog.records if "rows/s" in r.getMessage()]
    assert [line.split(" (")[0] for line in progress] == [
        "answered 16 of 40 rows",
        "answered 32 of 40 rows",
        "answered 40 of 40 rows",
    ]


def test_guardrails_and_heuristic_fallback(run_dir, small_dataset):
    from linklm.model import examples

    rows = examples.split_rows(small_dataset, "test", max_rows=3)
    first = rows["available_channels_mhz"][0][0]
    ok = predict.guardrails(
        rows, np.array([first, 1234, first]), np.array([10.0, 10.0, 10 * 160 + 1.0])
    )
    assert ok.tolist() == [True, False, rows["channel_bandwidth_mhz"][2] * 10 >= 1601]
    assert not predict.guardrails(rows.head(1), np.array([first]), np.array([0.0]))[0]

    # an untrained model answers garbage: without fallback unusable, with it the heuristic
    untrained = predict.Predictor("linklm-default", fallback="none")
    text = _as_text(rows)
    plain = untrained.predict(text).rows
    assert (plain["source"] == "none").sum() == (~plain["valid"]).sum()
    untrained.fallback = "heuristic"
    fixed = untrained.predict(text)
    quiet = fixed.rows.filter(pl.col("source") == "heuristic")
    assert quiet.height == (~plain["valid"]).sum()
    from linklm.evaluation import baselines

    expected = dict(zip(rows["scenario_id"], baselines.quietest_channel(rows), strict=True))
    assert all(expected[r["scenario_id"]] == r["recommended_channel_mhz"] for r in quiet.to_dicts())
    assert not fixed.failed
    untrained.fallback = "ranked"  # the model's own most likely available channel instead
    ranked = untrained.predict(text).rows.filter(pl.col("source") == "ranked")
    assert ranked.height == quiet.height
    assert (ranked["recommended_channel_mhz"] == ranked["candidate_1_mhz"]).all()


def _as_text(rows: pl.DataFrame) -> pl.DataFrame:
    return rows  # a typed frame (lists, scan aligned with channels) is accepted as well


def test_cli_csv_jsonl_and_stdin(run_dir, seed_csv, tmp_path, monkeypatch, capsys, prefect_harness):
    out = tmp_path / "answers.csv"
    # a file in-process (the flow on the session's Prefect server), stdin as a user types it
    code = predict_cli.main(
        ["--model", str(run_dir), "--input", str(seed_csv), "--output", str(out)]
    )
    assert code in (0, 1) and "40 rows answered" in capsys.readouterr().out
    assert pl.read_csv(out).height == 40
    records = pl.read_csv(seed_csv, infer_schema=False).head(2).to_dicts()
    for r in records:
        for k in (
            "available_channels_mhz",
            "spectral_scan_dbm",
            "device_a_coordinates",
            "device_b_coordinates",
        ):
            r[k] = json.loads(r[k])
    jsonl = tmp_path / "links.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    one = {k: v for k, v in records[0].items() if k not in ("scenario_id", "rssi_dbm", "snr_db")}
    stdin = run_module("flows.predict", "--model", run_dir, "--input", "-", input=json.dumps(one))
    answer = json.loads(stdin.stdout.strip().splitlines()[-1])
    assert answer["scenario_id"] == 1 and "recommended_channel_mhz" in answer
    assert stdin.returncode == (0 if answer["valid"] else 1)
    bad = dict(one, tx_power_dbm="loud")  # in-process: the same main() as the CLI above
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(bad).encode())))
    code = predict_cli.main(["--model", str(run_dir), "--input", "-"])
    assert code == 1 and "tx_power_dbm" in capsys.readouterr().err
    from_jsonl = predict.Predictor(str(run_dir)).predict_source(str(jsonl))
    assert from_jsonl.rows.height == 2


def test_champion_resolution(run_dir, tmp_path):
    registry = pytest.importorskip("linklm.serving.registry")
    with pytest.raises(registry.RegistryError):
        predict.model_folder("champion", tmp_path / "registry.json")


def test_model_card_matches_the_run_and_its_metrics(run_dir, small_dataset):
    from linklm.evaluation import evaluate

    text = (run_dir / "README.md").read_text()
    assert text.startswith("---\n") and "library_name: transformers" in text
    assert "Not evaluated yet" in text
    result = evaluate.evaluate(
        EvalConfig(model=str(run_dir), data_dir=small_dataset, max_rows=50, tabular_rows=300)
    )
    text = (run_dir / "README.md").read_text()
    metrics = json.loads((run_dir / "eval-test" / "metrics.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    assert metrics["systems"] == result["systems"]
    model = metrics["systems"][0]
    assert f"| **fine-tuned model** | {100 * model['channel']['top1']:.1f} %" in text
    assert run["dataset_sha256"] in text and f"| steps | {run['steps']} |" in text
    assert "synthetic" in text and "Intended use and limits" in text
    # the metadata a Hub user's tools read: licence, no base (trained from scratch), and the
    # evaluation as model-index entries equal to metrics.json
    from huggingface_hub import ModelCard

    data = ModelCard.load(run_dir / "README.md").data
    assert data.license == "apache-2.0" and data.base_model is None
    reported = {r.metric_name: r.metric_value for r in data.eval_results}
    assert reported["channel top-1 (ranked)"] == round(model["channel"]["top1_ranked"], 4)
    assert reported["channel top-3"] == round(model["channel"]["top3"], 4)
    # a figure the model has none of (no parsable throughput after 40 steps) is left out
    mae = model["throughput"]["mae"]
    assert reported.get("throughput MAE (Mbps)") == (None if mae is None else round(mae, 4))
    assert {r.dataset_split for r in data.eval_results} == {"test"}
    assert {r.dataset_revision for r in data.eval_results} == {metrics["dataset_sha256"]}


def test_publish_refuses_a_run_never_evaluated(small_dataset, tmp_path, capsys):
    from conftest import cli_error

    from flows import publish as publish_cli

    summary = training.train(
        TrainConfig(
            data_dir=small_dataset,
            out_dir=tmp_path,
            run_name="new",
            max_steps=2,
            eval_rows=0,
            max_rows=64,
        )
    )
    argv = [summary["run_dir"], "--repo-id", "me/x", "--dry-run"]
    code, line = cli_error(publish_cli.main, argv, capsys)
    assert code == 2 and "never evaluated" in line and "--allow-unevaluated" in line
    assert not (Path(summary["run_dir"]) / "publish").exists()
    folder = publish.assemble(Path(summary["run_dir"]), allow_unevaluated=True)
    assert "Not evaluated yet" in (folder / "README.md").read_text()


def test_publish_dry_run_folder_loads_back(run_dir, seed_csv, tmp_path, prefect_harness):
    from flows import publish as publish_cli

    # in-process: the same main() as `python -m flows.publish` (a subprocess spent ~20 s
    # importing); evaluated or not, the folder loads back
    argv = [str(run_dir), "--repo-id", "me/linklm-test", "--dry-run", "--allow-unevaluated"]
    assert publish_cli.main([*argv, "--out-dir", str(tmp_path / "up")]) == 0
    folder = tmp_path / "up"
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "linklm_prompt.json",
        "run.json",
    } <= {p.name for p in folder.iterdir()}
    loaded = publish.check_loads(folder)
    assert loaded["model_class"] == "Gemma3ForCausalLM" and loaded["parameters"] > 1e6
    # what the card's "How to use" says works on the folder as a Hub download has it
    assert predict.model_folder(str(folder)) == str(folder)
    assert predict.Predictor(str(folder)).predict_source(str(seed_csv)).rows.height == 40
    assert (folder / "README.md").read_text() == card.render(run_dir)
    with pytest.raises(publish.PublishError, match="no adapter"):
        publish.weights_dir(run_dir, adapter=True)
    with pytest.raises(publish.PublishError, match="no Hugging Face token"):
        publish.push(folder, "me/x", True, None)
    # the folder carries run.json's file hashes: a changed byte is named before a push, and
    # where a Hub download of it is loaded
    run = json.loads((run_dir / "run.json").read_text())
    assert json.loads((folder / "run.json").read_text())["files_sha256"] == run["files_sha256"]
    flip_last_byte(folder / "model.safetensors")
    named = r"model\.safetensors: SHA256 .* != run\.json .*changed since training.*assemble it"
    with pytest.raises(models.ModelError, match=named):
        publish.check_loads(folder)
    with pytest.raises(models.ModelError, match=named):
        predict.Predictor(str(folder))


def test_publish_never_replaces_a_folder_it_did_not_make(run_dir, tmp_path):
    """Assembling replaces the upload folder as a whole: the run folder, a folder holding
    it, or a folder of someone's files is refused, and left as it was."""
    before = sorted(p.name for p in run_dir.iterdir())
    for out in (run_dir, run_dir.parent, run_dir / "model"):
        with pytest.raises(publish.PublishError, match="choose (another|a new) --out-dir"):
            publish.assemble(run_dir, out)
    assert sorted(p.name for p in run_dir.iterdir()) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(publish.PublishError, match="not an upload folder made by publish"):
        publish.assemble(run_dir, mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    folder = publish.assemble(run_dir, tmp_path / "up")
    assert publish.assemble(run_dir, folder) == folder  # an upload folder is made again
    broken = tmp_path / "broken-run"
    shutil.copytree(run_dir, broken)
    (broken / "run.json").write_text("{bad")
    with pytest.raises(publish.PublishError, match=r"run.json: not readable JSON"):
        publish.assemble(broken, tmp_path / "up-broken")
    assert not (tmp_path / "up-broken").exists()


def test_published_adapter_names_a_hub_base_or_says_it_needs_a_local_one(small_dataset, tmp_path):
    summary = training.train(
        TrainConfig(
            data_dir=small_dataset,
            out_dir=tmp_path,
            run_name="lora",
            mode="lora",
            max_steps=4,
            eval_rows=0,
            max_rows=200,
        )
    )
    run_dir = Path(summary["run_dir"])
    # the default model has no hub id: the adapter keeps its local base, and the flow warns
    folder = publish.assemble(run_dir, tmp_path / "up", adapter=True, allow_unevaluated=True)
    assert publish.local_base(folder) == summary["base_model"]
    assert publish.check_loads(folder)["model_class"] == "PeftModelForCausalLM"
    assert "library_name: peft" in (folder / "README.md").read_text()  # what is uploaded
    assert "library_name: transformers" in (run_dir / "README.md").read_text()  # merged model/
    # a base with a hub id is written into the adapter; the dry run still loads it offline,
    # onto the local base it trained on
    gguf_run = tmp_path / "gguf-lora"
    shutil.copytree(run_dir, gguf_run)
    record = json.loads((gguf_run / "run.json").read_text())
    record["config"]["model"] = "gemma-3-270m-gguf"
    (gguf_run / "run.json").write_text(json.dumps(record))
    folder = publish.assemble(gguf_run, tmp_path / "up-gguf", adapter=True, allow_unevaluated=True)
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "google/gemma-3-270m"
    assert publish.local_base(folder) is None
    assert publish.check_loads(folder)["model_class"] == "PeftModelForCausalLM"
    gemma_card = (folder / "README.md").read_text()
    assert "base_model: google/gemma-3-270m" in gemma_card and "license: gemma" in gemma_card
    assert "Gemma Terms of Use" in gemma_card


def test_predicts_the_split_of_a_dataset_folder(predictor, small_dataset, tmp_path):
    from linklm.model import examples

    result = predictor.predict_source(str(small_dataset), "test")
    assert result.problems.height == 0
    assert (
        result.rows["scenario_id"].to_list()
        == examples.split_rows(small_dataset, "test")["scenario_id"].to_list()
    )
    with pytest.raises(Exception, match="not a dataset"):
        predictor.predict_source(str(tmp_path))


def test_predicts_a_csv_written_by_plain_python(predictor, small_dataset, tmp_path):
    """Another program's CSV: csv.writer, Python-literal lists and maps, True/False."""
    import csv

    from linklm import schema
    from linklm.model import examples

    rows = examples.split_rows(small_dataset, "test", max_rows=12).to_dicts()
    path = tmp_path / "other.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        columns = [c for c in schema.INPUT_COLUMNS]  # inputs only, no id, no labels
        writer.writerow(columns)
        for r in rows:
            r = dict(r)
            r["spectral_scan_dbm"] = dict(
                zip(r["available_channels_mhz"], r["spectral_scan_dbm"], strict=True)
            )
            writer.writerow([str(r[c]) for c in columns])  # str(): Python's own literals
        fh.write("\n\n")  # trailing blank lines are no links
    result = predictor.predict_source(str(path))
    assert result.problems.height == 0 and result.rows.height == 12
    assert result.rows["scenario_id"].to_list() == list(range(1, 13))  # numbered 1..n
    ours = predictor.predict(examples.split_rows(small_dataset, "test", max_rows=12)).rows
    assert result.rows.drop("scenario_id").equals(ours.drop("scenario_id"))


def test_reads_and_writes_fsspec_urls(predictor, seed_csv):
    import fsspec

    from linklm.serving import predict_io

    with fsspec.open("memory://inbox/links.csv", "wb") as fh:
        fh.write(seed_csv.read_bytes())
    result = predictor.predict_source("memory://inbox/links.csv")
    assert result.rows.height == 40 and result.problems.height == 0
    predict_io.write_answers(result.rows, "memory://outbox/answers.parquet")
    with fsspec.open("memory://outbox/answers.parquet", "rb") as fh:
        assert pl.read_parquet(fh).equals(result.rows)


def test_a_parquet_input_with_columns_of_other_types_is_read(predictor, small_dataset, tmp_path):
    from datetime import datetime

    rows = pl.read_parquet(next((small_dataset / "chunks").glob("*.parquet"))).head(5)
    path = tmp_path / "links.parquet"
    rows.with_columns(measured_at=pl.lit(datetime(2026, 12, 3, 17, 0))).write_parquet(path)
    assert predictor.predict_source(str(path)).rows.height == 5  # the extra column ignored


def test_publish_names_a_damaged_run_record_or_metrics_file(run_dir, small_dataset, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval-*", "publish"))
    record = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({k: v for k, v in record.items() if k != "steps"}))
    with pytest.raises(publish.PublishError, match="run.json: lacks steps"):
        publish.assemble(copy)
    del record["config"]["seed"]
    (copy / "run.json").write_text(json.dumps(record))
    with pytest.raises(publish.PublishError, match="lacks config.seed"):
        publish.assemble(copy)
    record["config"]["seed"] = 0
    (copy / "run.json").write_text(json.dumps(record))
    (copy / "eval-test").mkdir()
    (copy / "eval-test" / "metrics.json").write_text('{"rows": 5')
    with pytest.raises(card.CardError, match="metrics.json: not readable JSON"):
        publish.assemble(copy)
    assert not (copy / "publish").exists()


def test_weights_damaged_to_nan_are_named_not_printed_as_scores(
    run_dir, seed_csv, tmp_path, capsys
):
    """NaN weights would rank channels arbitrarily and print NaN (invalid JSON) as scores.
    Saved by a training that diverged, so run.json records their hash."""
    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    weights = damaged / "model" / "model.safetensors"
    tensors = {k: torch_nan_like(v) for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    record = json.loads((damaged / "run.json").read_text())
    record[models.FILES_KEY]["model"] = models.file_hashes(weights.parent)
    (damaged / "run.json").write_text(json.dumps(record))
    argv = ["--model", str(damaged), "--input", str(seed_csv), "--output", str(tmp_path / "a.csv")]
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: predict_cli.main(argv))  # as `python -m flows.predict` runs it
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "NaN or infinite" in err and "damaged" in err
    assert not (tmp_path / "a.csv").exists()


def torch_nan_like(tensor):
    return tensor.clone().fill_(float("nan")) if tensor.is_floating_point() else tensor


def test_links_outside_what_the_model_saw_are_marked_or_refused(
    run_dir, seed_csv, monkeypatch, capsys
):
    """Legal inputs the generator never makes: a scan reading 42.7 dB above the floor (the
    prompt clips it at 25.5) and a Fresnel clearance of 5 % on an open link. Answered with
    the reason in out_of_range and counted in the summary; refused with --strict."""
    text = pl.read_csv(seed_csv, infer_schema=False).head(4)
    scan = json.loads(text["spectral_scan_dbm"][0])
    scan[next(iter(scan))] = float(text["noise_floor_dbm"][0]) + 42.7
    fresnel = text["fresnel_clear_pct"].to_list()
    text = text.with_columns(
        pl.Series("spectral_scan_dbm", [json.dumps(scan), *text["spectral_scan_dbm"][1:]]),
        pl.Series("fresnel_clear_pct", [fresnel[0], "5", *fresnel[2:]]),
    )
    predictor = predict.Predictor(str(run_dir), fallback="heuristic")  # every row answered
    result = predictor.predict(text)
    reasons = result.rows[predict.OUT_OF_RANGE].to_list()
    assert reasons[0].startswith("spectral_scan_dbm: a reading is more than 25.5 dB above")
    assert reasons[1].startswith("fresnel_clear_pct: outside the generator's range")
    assert reasons[2:] == [None, None]
    summary = result.summary("answers.csv")
    assert summary["out_of_range"] == 2 and summary["skipped"] == 0 and not result.failed
    strict = predict.Predictor(str(run_dir), fallback="heuristic", strict=True).predict(text)
    assert strict.rows["scenario_id"].to_list() == result.rows["scenario_id"].to_list()[2:]
    assert strict.problems["row"].unique().sort().to_list() == [0, 1]
    assert all(m.endswith("(refused: --strict)") for m in strict.problems["message"])
    # the CLI says so on stderr, and --strict makes it exit 1 with both links skipped
    lines = "\n".join(json.dumps(r) for r in text.to_dicts())
    for argv, code in (([], 0), (["--strict"], 1)):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines.encode())))
        argv = ["--model", str(run_dir), "--input", "-", "--fallback", "heuristic", *argv]
        assert predict_cli.main(argv) == code
        err = capsys.readouterr().err
        assert ("answered, out of range: scenario_id" in err) == (code == 0)
        assert ("refused: --strict" in err) == (code == 1)
