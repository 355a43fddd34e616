"""The work pools, named by what their machines need, created idempotently on any Prefect API.

Both are process pools: a worker runs each flow run as a subprocess of itself, on whatever
machine the worker runs on (a laptop, a VM, the Docker image, a Colab runtime). The GPU
pool's worker is what decides that a run gets a GPU; the pool only routes the work there.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.workers.process import ProcessWorker


@dataclass(frozen=True)
class Pool:
    name: str
    description: str


CPU = Pool("linklm-cpu", "CPU machines: data generation and the CPU demo.")
GPU = Pool(
    "linklm-gpu",
    "GPU machines (Docker image, VM, Colab): training, evaluation, experiments, retraining.",
)
POOLS = (CPU, GPU)


def ensure_pools(pools: tuple[Pool, ...] = POOLS) -> dict[str, str]:
    """Create each missing pool; an existing one is left as its owner configured it.

    Returns ``{name: "created" | "exists"}``. The base job template is the process worker's
    own default, taken from the installed Prefect, so nothing is fetched from the network.
    """
    template = ProcessWorker.get_default_base_job_template()
    out = {}
    with get_client(sync_client=True) as client:
        for pool in pools:
            try:
                client.create_work_pool(
                    WorkPoolCreate(
                        name=pool.name,
                        type=ProcessWorker.type,
                        description=pool.description,
                        base_job_template=template,
                    )
                )
                out[pool.name] = "created"
            except ObjectAlreadyExists:
                out[pool.name] = "exists"
    return out
