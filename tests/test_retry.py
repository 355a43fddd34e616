"""Tasks retry a passing failure, never one that would come back (real Prefect harness)."""

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client

from linklm.errors import DatasetError
from tasks.retry import only_transient


def _attempts(error: BaseException) -> int:
    calls = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=only_transient)
    def failing():
        calls.append(1)
        raise error

    @flow
    def run_it():
        failing()

    with pytest.raises(type(error)):
        run_it()
    return len(calls)


def test_bad_input_fails_at_once_and_a_hiccup_is_retried(prefect_harness):
    assert _attempts(DatasetError("runs/data/manifest.json: no manifest")) == 1
    assert _attempts(OSError("No space left on device")) == 3


def test_the_training_task_does_not_retry_a_missing_dataset(
    prefect_harness, tmp_path, small_dataset
):
    import shutil

    from flows.train import train_flow
    from linklm.config import TrainConfig

    # a missing folder is named by the run's checks, before any task starts
    state = train_flow(
        TrainConfig(data_dir=tmp_path / "nope", out_dir=tmp_path / "runs"), return_state=True
    )
    assert state.is_failed() and "nope: no such dataset folder" in str(state.message)
    # a chunk gone from a folder whose manifest reads: the preparing task finds it, once
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    next((data / "chunks").glob("*.parquet")).unlink()
    state = train_flow(
        TrainConfig(data_dir=data, out_dir=tmp_path / "runs", run_name="gone"), return_state=True
    )
    assert state.is_failed() and "1 bad chunk(s)" in str(state.message)
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    prepare = [r for r in runs if r.name.startswith("prepare-training")]
    assert prepare and all(r.run_count == 1 for r in prepare), [
        (r.name, r.run_count) for r in prepare
    ]
