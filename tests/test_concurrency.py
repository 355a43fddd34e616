"""Two writers at once: a dataset folder, a training run folder (the champion registry:
tests/test_store.py, on one disk and on S3)."""

import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
from conftest import ROOT
from transformers import TrainerCallback

from linklm import atomic
from linklm.config import GenerationConfig, TrainConfig
from linklm.data import dataset
from linklm.model import runs, training
from linklm.model.runs import TrainingError


def test_two_data_flows_on_one_folder_one_builds_the_other_is_refused(tmp_path):
    out = tmp_path / "shared"
    gen = GenerationConfig(n_rows=30_000, chunk_size=500, seed=4)
    args = ["--out-dir", str(out), "--n-rows", "30000", "--chunk-size", "500", "--seed", "4"]
    procs = []
    for i in range(2):  # started together: both reach the folder within Prefect's start-up
        # each with a temporary Prefect server of its own, as a user's first runs: their
        # start-ups (10-20 s) overlap the other's build; on the session's server one CLI
        # started in seconds and built all 30,000 rows before the other reached the folder
        env = dict(os.environ, PREFECT_HOME=str(tmp_path / f"home-{i}"))
        env.pop("PREFECT_API_URL", None)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "flows.data", *args, "--no-export"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    refused = [err for code, err in results if code == 2]
    assert codes == [0, 2], results
    errors = [line for line in refused[0].splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "another run is writing this dataset" in errors[0], refused
    assert dataset.verify(out) == []
    reference = dataset.build(tmp_path / "reference", gen)
    assert json.loads((out / "manifest.json").read_text()) == reference
    assert atomic.stray_temp_files(out) == []


def test_a_second_training_into_the_same_run_folder_is_refused(small_dataset, tmp_path):
    config = TrainConfig(
        data_dir=small_dataset,
        out_dir=tmp_path,
        run_name="shared",
        max_steps=2,
        batch_size=8,
        eval_rows=0,
        max_rows=64,
    )
    held = threading.Event()
    release = threading.Event()

    def first_writer() -> None:
        with runs.run_lock(config):
            # a live run has written its settings (train_config.json) when training began
            sha = json.loads((small_dataset / "manifest.json").read_text())["dataset_sha256"]
            settings = config.model_dump(mode="json") | {runs.DATASET_KEY: sha}
            (tmp_path / "shared" / runs.CONFIG_FILE).write_text(json.dumps(settings))
            held.set()
            release.wait(60)

    writer = threading.Thread(target=first_writer)
    writer.start()
    try:
        assert held.wait(30)
        with pytest.raises(TrainingError, match="another run is training into this folder"):
            training.train(config)
        assert not (tmp_path / "shared" / runs.RUN_FILE).exists()
        assert not (tmp_path / "shared" / "checkpoints").exists()
        # a resume meanwhile: the checkpoint the live run is writing is not taken for the
        # unfinished save of a killed run (which a resume removes)
        being_written = tmp_path / "shared" / "checkpoints" / "checkpoint-60"
        being_written.mkdir(parents=True)
        (being_written / "model.safetensors").write_bytes(b"half")
        with pytest.raises(TrainingError, match="another run is training into this folder"):
            training.train(config.model_copy(update={"resume": True}))
        assert (being_written / "model.safetensors").read_bytes() == b"half"
        shutil.rmtree(being_written.parent)
    finally:
        release.set()
        writer.join()
    (tmp_path / "shared" / runs.CONFIG_FILE).unlink()  # as if it had never started
    summary = training.train(config)  # the lock is free again
    assert summary["steps"] == 2


class _Paused(TrainerCallback):
    """Holds the training at its first step until the test lets it go."""

    def __init__(self) -> None:
        self.training, self.go_on = threading.Event(), threading.Event()

    def on_step_end(self, args, state, control, **kwargs):
        self.training.set()
        self.go_on.wait(120)


def test_a_dataset_a_training_reads_is_not_overwritten_meanwhile(
    small_dataset, tmp_path, prefect_api
):
    """Before, `flows.data --overwrite` of the folder a training was reading went ahead, and
    run.json then recorded a SHA256 the folder no longer held. The training holds the
    dataset shared from its first read to run.json; the writer is refused, in one line."""
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    before = (data / "manifest.json").read_bytes()
    config = TrainConfig(
        data_dir=data, out_dir=tmp_path / "runs", run_name="r", max_steps=2, eval_rows=0
    )
    paused, result = _Paused(), {}
    trainer = threading.Thread(
        target=lambda: result.update(training.train(config, callbacks=[paused]))
    )
    trainer.start()
    try:
        assert paused.training.wait(120)
        overwrite = subprocess.run(
            [sys.executable, "-m", "flows.data", "--out-dir", str(data), "--n-rows", "500"]
            + ["--chunk-size", "250", "--overwrite", "--no-export"],
            cwd=ROOT,
            env=dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), **prefect_api),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        paused.go_on.set()
        trainer.join()
    errors = [line for line in overwrite.stderr.splitlines() if line.startswith("error: ")]
    assert overwrite.returncode == 2 and len(errors) == 1, overwrite.stderr[-2000:]
    assert "is reading this dataset" in errors[0] and "wait for it to finish" in errors[0]
    assert (data / "manifest.json").read_bytes() == before
    sha = json.loads(before)["dataset_sha256"]
    assert result["dataset_sha256"] == sha and result["steps"] == 2
    # readers together are fine, and the writer is free again once they are done
    with dataset.reading(data), dataset.reading(data):
        pass
    assert dataset.build(data, GenerationConfig(n_rows=500, chunk_size=250), overwrite=True)
