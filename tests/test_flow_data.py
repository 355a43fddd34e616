"""The data flow under real Prefect: end to end, artifacts, cache hits, kill and resume, CLI."""

import json
import time

import pytest
from conftest import run_module
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows import data as data_flow_module
from flows.data import data_flow, run_data_flow
from linklm import atomic
from linklm.config import DataFlowConfig, GenerationConfig, PromptConfig
from linklm.data import dataset
from linklm.errors import PromptError

SMALL = GenerationConfig(n_rows=2400, chunk_size=600, seed=5)


def _task_states(flow_run_id, timeout_s: float = 30.0) -> dict[str, str]:
    """Task run states of one flow run, once the server has recorded all of them.

    Task runs and their states reach the server as events, after the flow has returned;
    on a slow machine a run can still have no state then (CI saw `state=None`).
    """
    deadline = time.monotonic() + timeout_s
    seen = -1
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        settled = all(run.state is not None and run.state.is_final() for run in runs)
        if settled and len(runs) == seen:  # and no run appeared since the last look
            break
        seen = len(runs)
        if time.monotonic() > deadline:
            pending = sorted(r.name for r in runs if r.state is None or not r.state.is_final())
            raise AssertionError(f"task runs without a final state after {timeout_s} s: {pending}")
        time.sleep(0.2)
    return {
        run.name.rsplit("-", 1)[0] + f"#{i}": run.state.name
        for i, run in enumerate(sorted(runs, key=lambda r: r.name))
    }


def test_flow_builds_everything_and_publishes_artifacts(prefect_harness, tmp_path):
    config = DataFlowConfig(out_dir=tmp_path / "data", generation=SMALL, shard_rows=1000)
    state = data_flow(config, return_state=True)
    result = state.result()
    out = config.out_dir
    assert result["rows"] == 2400 and result["bad_rows"] == 0
    assert sum(result["splits"].values()) == 2400
    assert dataset.verify(out) == []
    for name in (
        "manifest.json",
        "export/links.csv",
        "export/links.csv.zip",
        "validation/report.md",
        "shards/README.md",
    ):
        assert (out / name).exists(), name
    assert atomic.stray_temp_files(out) == []
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import (
            ArtifactFilter,
            ArtifactFilterFlowRunId,
            ArtifactFilterKey,
        )

        artifacts = client.read_artifacts(  # this run's: other tests share the server
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["data-validation", "data-manifest"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    kinds = {a.key: a for a in artifacts}
    assert (
        "2400" in kinds["data-validation"].data
        and result["dataset_sha256"] in kinds["data-validation"].data
    )
    assert len(json.loads(kinds["data-manifest"].data)) == 4


def test_rerun_is_cache_hits_and_same_bytes_for_any_worker_count(prefect_harness, tmp_path):
    config = DataFlowConfig(out_dir=tmp_path / "data", generation=SMALL)
    first = run_data_flow(config, workers=1)
    state = data_flow(config, return_state=True)
    second = state.result()
    assert second["dataset_sha256"] == first["dataset_sha256"]
    states = _task_states(state.state_details.flow_run_id)
    cached = {k.split("#")[0] for k, v in states.items() if v == "Cached"}
    assert {"validate-dataset", "export-csv-zip", "write-shards"} <= cached, states
    other = run_data_flow(config.model_copy(update={"out_dir": tmp_path / "other"}), workers=3)
    assert other["dataset_sha256"] == first["dataset_sha256"]
    assert json.loads((tmp_path / "other" / "manifest.json").read_text()) == json.loads(
        (tmp_path / "data" / "manifest.json").read_text()
    )


def test_deleted_output_is_rebuilt_not_served_from_cache(prefect_harness, tmp_path):
    config = DataFlowConfig(out_dir=tmp_path / "data", generation=SMALL)
    data_flow(config)
    (config.out_dir / "export" / "links.csv.zip").unlink()
    (config.out_dir / "shards" / "test-00000-of-00001.jsonl").unlink()
    data_flow(config)
    assert (config.out_dir / "export" / "links.csv.zip").exists()
    assert (config.out_dir / "shards" / "test-00000-of-00001.jsonl").exists()


def _cli(args, tmp_path):
    return run_module("flows.data", *args, env={"PREFECT_HOME": str(tmp_path / "cli-home")})


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n-rows", "-5"], "invalid option n_rows: Input should be greater than 0"),
        (["--chunk-size", "0"], "invalid option chunk_size: Input should be greater than 0"),
        (["--stratify-by", "colour"], "invalid option stratify_by"),
        (["--balance", "sideways", "--stratify-by", "area_density"], "invalid option balance"),
        (["--workers", "0"], "workers: must be >= 1"),
        (["--target", "rssi"], "invalid option target"),
    ],
)
def test_cli_rejects_bad_options_in_one_line(tmp_path, args, message):
    done = _cli([*args, "--out-dir", str(tmp_path / "x")], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip()[7:]}"]
    assert message in done.stderr
    assert not (tmp_path / "x" / "chunks").exists()


def test_a_leaking_template_or_an_absent_scheduler_is_refused_before_any_row(
    prefect_harness, tmp_path
):
    leaky = tmp_path / "leaky.txt"
    leaky.write_text("A link of {link_distance_m} m at SNR {snr_db} dB")
    cases = [
        (["--template-file", str(leaky)], "leaky.txt: prompt template uses {snr_db}"),
        (["--dask-address", "tcp://127.0.0.1:1"], "no Dask scheduler answers there"),
    ]
    for args, message in cases:
        done = _cli([*args, "--n-rows", "300", "--out-dir", str(tmp_path / "x")], tmp_path)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert message in done.stderr
        assert not (tmp_path / "x").exists()
    # a deployment's run, which has no CLI in front of it, fails before generating too
    config = DataFlowConfig(
        out_dir=tmp_path / "y", generation=SMALL, prompt=PromptConfig(template=leaky.read_text())
    )
    with pytest.raises(PromptError, match="uses {snr_db}"):
        data_flow(config)
    assert not (tmp_path / "y").exists()


def test_cli_verify_and_validate(small_dataset, tmp_path, capsys):
    assert data_flow_module.main(["verify", str(small_dataset)]) == 0
    assert "OK" in capsys.readouterr().out
    assert (
        data_flow_module.main(["validate", str(small_dataset), "--report-dir", str(tmp_path / "r")])
        == 0
    )
    assert "rows: **3000**" in capsys.readouterr().out
    missing = _cli(["verify", str(tmp_path / "nothing")], tmp_path)
    assert (
        missing.returncode == 2
        and "nothing: no such dataset folder" in missing.stderr
        and len(missing.stderr.strip().splitlines()) == 1
    )


def test_train_flow_runs_prepare_train_save_and_links_the_run(
    prefect_harness, small_dataset, tmp_path
):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.train import train_flow
    from linklm.config import TrainConfig

    config = TrainConfig(
        data_dir=small_dataset,
        out_dir=tmp_path,
        run_name="flow",
        max_steps=6,
        batch_size=16,
        eval_rows=32,
        eval_steps=3,
        save_steps=3,
        warmup_steps=1,
    )
    state = train_flow(config, return_state=True)
    summary = state.result()
    assert summary["steps"] == 6 and (tmp_path / "flow" / "model" / "config.json").exists()
    names = {k.split("#")[0] for k in _task_states(state.state_details.flow_run_id)}
    assert {"prepare-training", "train-model", "save-run"} <= names
    with get_client(sync_client=True) as client:
        links = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["train-run"]))
        )
    assert any((tmp_path / "flow").resolve().as_uri() in a.data for a in links)
    dry = train_flow(config.model_copy(update={"run_name": "dry", "dry_run": True}))
    assert dry["dry_run"] is True and not (tmp_path / "dry" / "run.json").exists()


def test_train_cli_checks_a_run_once_and_names_one_folder(
    prefect_harness, small_dataset, tmp_path, monkeypatch
):
    """The CLI checks the run before Prefect starts; the flow's tasks do not check it again
    (the run folder, the model folder's hashes), and the run it trains is the one it named."""
    from flows import train as train_cli
    from linklm.model import models, training

    counted = {"run folder": 0, "model folder": 0}

    def counting(name, real):
        def wrapper(*args, **kwargs):
            counted[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(training, "check_run_dir", counting("run folder", training.check_run_dir))
    monkeypatch.setattr(models, "_folder_problem", counting("model folder", models._folder_problem))
    models._checked.clear()  # a folder another test checked in this process counts here too
    out = tmp_path / "runs"
    args = ["--data-dir", small_dataset, "--out-dir", out, "--max-steps", "2", "--eval-rows", "0"]
    assert train_cli.main([str(a) for a in args]) == 0
    assert counted == {"run folder": 1, "model folder": 1}
    (run,) = out.iterdir()  # no second, empty folder holding only a lock
    assert (run / "run.json").exists()
