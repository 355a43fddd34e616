"""The train flow's steps as Prefect tasks: prepare, dry-run, fit, save (``STEPS``, the same
sequence ``linklm.model.training.train`` runs). In-process objects pass between them, so
nothing is cached or persisted (a model is not a cache key); only preparing and saving retry,
since reading data or writing files can fail transiently and training from scratch again
cannot help.

``log_prints`` is off here: ``datasets`` fingerprints through dill, which disassembles
functions and captures what ``dis`` prints; Prefect's print capture would log that
disassembly instead (hundreds of lines) and hide it from dill.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_client, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Crashed

from linklm.config import TrainConfig
from linklm.evaluation import card
from linklm.model import ddp, runs, training
from tasks.retry import only_transient


@task(
    name="prepare-training",
    cache_policy=NO_CACHE,
    persist_result=False,
    log_prints=False,
    retries=1,
    retry_condition_fn=only_transient,
    retry_delay_seconds=2,
)
def prepare(config: TrainConfig, token: str | None) -> training.Prepared:
    return training.prepare(config, token)


@task(name="dry-run", cache_policy=NO_CACHE, persist_result=False, log_prints=False)
def dry_run(config: TrainConfig, prepared: training.Prepared) -> float:
    return training.dry_run(config, prepared)


@task(name="train-model", cache_policy=NO_CACHE, persist_result=False, log_prints=False)
def fit(
    config: TrainConfig, prepared: training.Prepared, checkpoint: Path | None, callbacks
) -> tuple:
    return training.fit(config, prepared, checkpoint, callbacks)


@task(
    name="save-run",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_condition_fn=only_transient,
    retry_delay_seconds=1,
)
def save(
    config: TrainConfig, prepared: training.Prepared, trainer, seconds: float, token: str | None
) -> dict:
    summary = training.save_run(config, prepared, trainer, seconds, token)
    card.write_card(runs.run_dir_of(config))  # the run's model card, from the files just saved
    return summary


@task(name="train-distributed", cache_policy=NO_CACHE, persist_result=False, log_prints=False)
def launch(config: TrainConfig, checkpoint: Path | None, token: str | None) -> dict:
    """prepare, fit and save on several processes (torchrun), rank 0 writing the run."""
    summary = ddp.launch(config, checkpoint, token)
    if "steps" in summary:
        card.write_card(runs.run_dir_of(config))
    return summary


def owner() -> dict:
    """The flow run training, as the run's lease in the store names it."""
    run_id = flow_run.get_id()
    return {"flow_run_id": str(run_id)} if run_id else {}


@task(name="crash-abandoned-run", cache_policy=NO_CACHE, persist_result=False)
def crash_abandoned(previous: dict) -> str | None:
    """The flow run whose worker died training this run (SIGKILL, a Colab disconnect) stays
    Running on the server forever: mark it Crashed, saying who resumed it. Returns the state
    it is left in (None when the lease named no other flow run)."""
    run_id, me = previous.get("flow_run_id"), str(flow_run.get_id())
    if not run_id or run_id == me:
        return None
    with get_client(sync_client=True) as client:
        old = client.read_flow_run(run_id)
        if old.state is not None and old.state.is_final():
            return old.state.name
        message = (
            f"its worker ({previous.get('host')}, pid {previous.get('pid')}) stopped renewing "
            f"the lease of run {previous.get('run_name')}; flow run {me} resumed it from the "
            "store"
        )
        client.set_flow_run_state(old.id, Crashed(message=message), force=True)
    get_run_logger().warning("flow run %s marked Crashed: %s", run_id, message)
    return "Crashed"


STEPS = training.Steps(
    prepare=prepare,
    dry_run=dry_run,
    fit=fit,
    save=save,
    launch=launch,
    owner=owner,
    took_over=crash_abandoned,
)
