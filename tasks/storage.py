"""Copy a finished folder to the artifact location (linklm.store) and link it in the UI.

Retried, because object stores and network mounts fail transiently; not cached, because
the point is the copy itself.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from linklm import store
from tasks.retry import only_transient


def destination(url: str, flow_name: str, name: str | None = None) -> str:
    """``<url>/<flow>/<name>``; the name defaults to the flow run's (unique, shown in the UI)."""
    return store.join(url, flow_name, name or flow_run.get_name() or "run")


@task(
    name="publish-artifacts",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_condition_fn=only_transient,
    retry_delay_seconds=5,
)
def publish_folder(
    src: Path, url: str | None, flow_name: str, name: str | None = None, key: str | None = None
) -> str | None:
    """Copy ``src`` under ``url`` when a location is set; returns where it went (or None)."""
    url = store.artifacts_url(url)
    if url is None:
        return None
    dest = destination(url, flow_name, name)
    index = store.publish_folder(Path(src), dest)
    get_run_logger().info(
        "published %d files (%d bytes) to %s", len(index["files"]), index["bytes"], dest
    )
    create_link_artifact(
        key=key or f"{flow_name}-artifacts",
        link=store.link(dest),
        link_text=dest,
        description=f"copy of {src}",
    )
    return dest


def publish_run(run_dir: Path, url: str | None, key: str) -> str | None:
    """Copy a finished run folder to ``runs/<run name>`` of the store, where ``--model
    RUN_NAME`` and the registry find it from any machine."""
    return publish_folder(run_dir, url, store.RUNS, Path(run_dir).name, key=key)
