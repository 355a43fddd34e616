"""One store for every worker (linklm.store), on a real S3-compatible server (moto's server
mode on 127.0.0.1) through s3fs: the registry and its lock, runs found by name from another
machine, and a training that survives its worker through checkpoints kept in the store.

"Another machine" is another process with its own HOME, LINKLM_HOME and working folder:
the processes share nothing but the store URL.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import tiny_train_config
from safetensors.torch import load_file
from transformers import TrainerCallback

from linklm import store
from linklm.config import TrainConfig
from linklm.errors import StorageError
from linklm.model import models, runs, training
from linklm.serving import registry
from linklm.serving.predict import Predictor

FROZEN = {"data_dir": "/frozen", "dataset_sha256": "f" * 64, "rows": 10, "generation": {}}

# One retraining's decision, as a machine that saw champion c0 would record it.
PROMOTE = """
import json, sys, time
from linklm.serving import registry
location, name, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
outcome = {"id": name, "run_dir": "/elsewhere/" + name, "status": "scored", "metric": "top1",
           "challenger_score": 0.9, "champion_score": 0.5, "metrics": {"top1": 0.9},
           "lineage": {}}
time.sleep(max(0.0, start_at - time.time()))  # every machine decides at the same instant
entry = registry.record_decision(location, outcome, "c0", {FROZEN})
print(json.dumps({"id": name, "promoted": entry["promoted"], "reason": entry["reason"],
                  "at": time.time()}))
""".replace("{FROZEN}", repr(FROZEN))


def machine_env(tmp_path, name: str) -> dict[str, str]:
    """The environment of a process that shares no disk with the others (it runs in HOME)."""
    home = tmp_path / name
    home.mkdir()
    return dict(os.environ) | {"HOME": str(home), "LINKLM_HOME": str(home / "linklm")}


@pytest.mark.parametrize("where", ["s3", "disk"])
def test_machines_deciding_at_once_promote_exactly_one(where, request, tmp_path):
    """On S3, processes that share no disk (the lock is an object created only if absent);
    on one disk, processes of one machine (a file lock)."""
    if where == "s3":
        location = store.registry_url(request.getfixturevalue("s3_store"))
    else:
        location = str(tmp_path / "registry" / "registry.json")
    first = {"id": "c0", "run_dir": "/elsewhere/c0", "status": "scored", "metric": "top1"}
    first |= {"challenger_score": 0.5, "champion_score": None, "metrics": {"top1": 0.5}}
    registry.record_decision(location, first | {"lineage": {}}, None, FROZEN)
    start_at = time.time() + 6  # after every interpreter has imported the registry
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTE, location, f"machine-{i}", str(start_at)],
            cwd=env["HOME"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, env in enumerate(machine_env(tmp_path, f"m{i}") for i in range(3))
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    promoted = [r["id"] for r in results if r["promoted"]]
    assert len(promoted) == 1, results
    assert all("champion changed" in r["reason"] for r in results if not r["promoted"])
    assert max(r["at"] for r in results) - min(r["at"] for r in results) < 5  # at once
    saved = registry.read(location)
    assert saved["champion"]["id"] == promoted[0]
    assert [e["promoted"] for e in saved["history"]].count(True) == 2  # c0, then one
    if where == "s3":
        fs, path = store.filesystem(location + store.LOCK_SUFFIX)
        assert not fs.exists(path)  # released


def test_a_lock_held_too_long_is_named_and_a_dead_holders_lock_is_broken(s3_store):
    location = store.registry_url(s3_store)
    with store.exclusive(location, "a decision"):
        held = r"has held the lock .*remove .*registry.json.lock"
        with (
            pytest.raises(StorageError, match=held),
            store.exclusive(location, "another decision", timeout_s=0.5),
        ):
            pass
        # a holder that died 20 minutes ago: its lock is broken, with a warning
        fs, path = store.filesystem(location + store.LOCK_SUFFIX)
        fs.pipe_file(path, json.dumps({"holder": "gone:1", "since": time.time() - 1200}).encode())
        with store.exclusive(location, "a decision after a crash", timeout_s=2):
            assert "gone:1" not in fs.cat_file(path).decode()


def test_a_run_has_one_live_trainer_and_a_dead_ones_lease_lapses(s3_store, monkeypatch):
    monkeypatch.setenv(store.LEASE_ENV, "1.5")
    run_url = store.run_url(s3_store, "leased")
    first = store.Lease(run_url, {"flow_run_id": "f1"}).acquire()
    renewed = store.read_json(store.join(run_url, store.LEASE_FILE))["renewed"]
    time.sleep(1.2)  # renewed every third of its length while the run trains
    assert store.read_json(store.join(run_url, store.LEASE_FILE))["renewed"] > renewed
    with pytest.raises(StorageError, match=r"training on .* flow run f1\), renewed"):
        store.Lease(run_url, {"flow_run_id": "f2"}).acquire(wait_s=2.5)  # outlives the wait
    first._stop.set()  # the worker dies: nobody renews the lease any more
    first._thread.join()
    second = store.Lease(run_url, {"flow_run_id": "f2"}).acquire()  # waits for it to lapse
    assert second.previous["flow_run_id"] == "f1"
    second.release()
    assert store.read_json(store.join(run_url, store.LEASE_FILE)) is None


@pytest.fixture(scope="module")
def straight_run(small_dataset, tmp_path_factory) -> dict:
    """24 steps without interruption: what a resumed run must end with."""
    out = tmp_path_factory.mktemp("straight")
    return training.train(_config(small_dataset, out, "straight"))


def _config(data_dir, out_dir, run_name: str, **kw) -> TrainConfig:
    return tiny_train_config(data_dir, out_dir, run_name=run_name, save_steps=6, **kw)


class Killed(TrainerCallback):
    """The worker dies right after a step's checkpoint was saved (and copied)."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise KeyboardInterrupt(f"killed after step {state.global_step}")


def test_a_run_whose_worker_died_resumes_from_the_store_on_another(
    small_dataset, straight_run, s3_store, tmp_path, monkeypatch
):
    config = _config(small_dataset, tmp_path / "gpu-a", "survivor")
    kept = config.model_copy(update={"artifacts_url": s3_store, "store_checkpoints": True})
    with pytest.raises(KeyboardInterrupt):
        training.train(kept, callbacks=[Killed(18)])
    remote = runs.checkpoints_url(kept)
    # the Trainer keeps 2 checkpoints here; the store mirrors it (6 was rotated out)
    fs, root = store.filesystem(remote)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root)) == ["checkpoint-12", "checkpoint-18"]

    # a SIGKILL leaves the dead worker's lease behind, no longer renewed
    run_url = store.run_url(s3_store, "survivor")
    dead = {"flow_run_id": "f-dead", "host": "gpu-a", "pid": 1, "run_name": "survivor"}
    store.write_json(store.join(run_url, store.LEASE_FILE), dead | {"renewed": time.time() - 5})
    monkeypatch.setenv(store.LEASE_ENV, "2")

    # another worker: another disk and home, the same settings given again (a re-trigger)
    monkeypatch.setenv("LINKLM_HOME", str(tmp_path / "gpu-b-home"))
    other = kept.model_copy(update={"out_dir": tmp_path / "gpu-b"})
    taken = []
    steps = dataclasses.replace(
        training.PLAIN_STEPS, owner=lambda: {"flow_run_id": "f-new"}, took_over=taken.append
    )
    resumed = training.train(other, steps=steps)
    assert resumed["steps"] == 24
    assert [t["flow_run_id"] for t in taken] == ["f-dead"]  # the train flow marks it Crashed
    assert store.read_json(store.join(run_url, store.LEASE_FILE)) is None  # released
    a = load_file(tmp_path / "gpu-b" / "survivor" / "model" / "model.safetensors")
    b = load_file(os.path.join(straight_run["run_dir"], "model", "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["final_eval_loss"] == straight_run["final_eval_loss"]

    # a finished run of that name in the store is not trained over from another machine
    store.publish_folder(tmp_path / "gpu-b" / "survivor", store.run_url(s3_store, "survivor"))
    third = kept.model_copy(update={"out_dir": tmp_path / "gpu-c"})
    with pytest.raises(runs.TrainingError, match="finished run of this name is in the store"):
        training.train(third)


def test_a_run_is_found_by_name_or_url_from_any_machine(
    small_dataset, straight_run, s3_store, tmp_path, monkeypatch
):
    store.publish_folder(straight_run["run_dir"], store.run_url(s3_store, "straight"))
    monkeypatch.setenv("LINKLM_HOME", str(tmp_path / "cpu-home"))
    monkeypatch.setenv(store.ENV_VAR, s3_store)
    monkeypatch.chdir(tmp_path)  # no runs/ here: the name can only come from the store
    folder = models.resolve("straight")
    assert folder == str(next((tmp_path / "cpu-home" / "store").glob("straight-*")) / "model")
    assert models.resolve(store.run_url(s3_store, "straight")) == folder  # one cached copy
    answer = Predictor("straight").predict_one(_one_link(small_dataset))
    assert answer["candidate_1_mhz"] in json.loads(answer_channels(small_dataset))  # ranked
    with pytest.raises(models.ModelError, match=f"a run in the store {s3_store}, or a hub"):
        models.resolve("no-such-run")


def _one_link(data_dir) -> dict:
    return _first_row(data_dir).drop(["recommended_channel_mhz"]).to_dicts()[0]


def answer_channels(data_dir) -> str:
    return _first_row(data_dir)["available_channels_mhz"][0]


def _first_row(data_dir):
    import polars as pl

    from linklm.data import export

    chunk = next((data_dir / "chunks").glob("*.parquet"))
    return export.to_seed_csv_frame(pl.read_parquet(chunk).head(1))


def test_fan_out_without_a_store_stops_before_anything_runs(monkeypatch, capsys):
    from conftest import cli_error

    from flows import sweep

    monkeypatch.delenv(store.ENV_VAR, raising=False)
    code, line = cli_error(sweep.main, ["--fan-out", "trial/trial", "--out-dir", "/tmp/x"], capsys)
    assert code == 2 and "report back through the store; set artifacts_url" in line
