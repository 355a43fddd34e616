"""Data generation on a Dask cluster: same dataset bytes as on threads, through Prefect."""

import json

import pytest

from flows.data import data_flow, task_runner
from linklm.config import DataFlowConfig, GenerationConfig
from linklm.data import dataset

distributed = pytest.importorskip("distributed")


def test_data_flow_on_a_dask_cluster_makes_the_same_dataset(prefect_harness, tmp_path):
    """Chosen through the config (as a deployment's run or the UI form sets it), on a
    cluster of 2 worker processes: the same manifest as threads."""
    generation = GenerationConfig(n_rows=2000, chunk_size=500, seed=11)
    reference = dataset.build(tmp_path / "threads", generation)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        config = DataFlowConfig(
            out_dir=tmp_path / "dask",
            generation=generation,
            export_csv=False,
            dask_address=cluster.scheduler_address,
        )
        result = data_flow(config)
    assert result["dataset_sha256"] == reference["dataset_sha256"]
    assert json.loads((tmp_path / "dask" / "manifest.json").read_text()) == reference
    assert result["rows"] == 2000 and not dataset.verify(tmp_path / "dask")


def test_thread_runner_by_default():
    assert type(task_runner(3)).__name__ == "ThreadPoolTaskRunner"
    assert type(task_runner(2, "tcp://127.0.0.1:1")).__name__ == "DaskTaskRunner"
