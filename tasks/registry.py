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

from linklm.evaluation import summaries
from linklm.serving import registry


@task(name="record-decision", cache_policy=NO_CACHE, persist_result=False)
def record_decision(path: Path, outcome: dict, champion_seen: str | None, frozen: dict) -> dict:
    """Decide under the registry lock, write it, and publish the decision and the history."""
    entry = registry.record_decision(path, outcome, champion_seen, frozen)
    create_markdown_artifact(
        key="retrain-decision", markdown=decision_markdown(entry), description=entry["reason"]
    )
    create_table_artifact(
        key="registry-history",
        table=[history_row(e) for e in registry.read(path)["history"]],
        description=f"every retraining decision in {path}",
    )
    return entry


def history_row(entry: dict) -> dict:
    return {
        "decided_at": entry["decided_at"],
        "challenger": entry["id"],
        "decision": entry["decision"],
        "metric": entry["metric"],
        "challenger_score": entry["challenger_score"],
        "champion": entry["champion"],
        "champion_score": entry["champion_score"],
    }


def decision_markdown(entry: dict) -> str:
    """The decision, both scores and the lineage, as the UI's markdown artifact shows them."""
    lineage = entry["lineage"]
    versions = lineage.get("code_version") or {}
    rows = [
        ["decision", f"**{entry['decision']}**"],
        ["reason", entry["reason"]],
        ["metric", entry["metric"]],
        ["challenger", f"{entry['id']}: {_score(entry['challenger_score'])}"],
        ["champion before", f"{entry['champion'] or 'none'}: {_score(entry['champion_score'])}"],
        ["training data SHA256", f"`{lineage.get('data_sha256')}`"],
        ["frozen test SHA256", f"`{lineage.get('frozen_test_sha256')}`"],
        ["code version", f"linklm {versions.get('linklm')}, git `{versions.get('git')}`"],
        ["challenger run", entry.get("run_dir") or "-"],
        ["published to", entry.get("artifacts") or "-"],
    ]
    if entry.get("error"):
        rows.append(["error", entry["error"]])
    return f"# Retraining: {entry['decision']}\n\n" + summaries.table(["", ""], rows)


def _score(value: float | None) -> str:
    return "no score" if value is None else f"{value:.4g}"
