"""Tasks of the retrain flow around the champion registry (linklm.serving.registry).

Recording a decision is not retried: it appends to the registry's history, and a blind
retry after an unknown outcome could record the same decision twice. The decision and the
registry's history are published as artifacts so the UI shows why a model serves.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from linklm.serving import registry


@task(name="record-decision", cache_policy=NO_CACHE, persist_result=False)
def record_decision(
    path: Path,
    outcome: dict,
    champion_seen: str | None,
    frozen: dict,
    replace_unscorable: bool = False,
) -> dict:
    """Decide under the registry lock, write it, and publish the decision and the history."""
    entry = registry.record_decision(path, outcome, champion_seen, frozen, replace_unscorable)
    create_markdown_artifact(
        key="retrain-decision",
        markdown=registry.decision_markdown(entry),
        description=entry["reason"],
    )
    create_table_artifact(
        key="registry-history",
        table=[registry.history_row(e) for e in registry.read(path)["history"]],
        description=f"every retraining decision in {path}",
    )
    return entry
