"""Tasks of the evaluate flow: evaluate (model + baselines), render the report, publish it.

Evaluation holds a model in memory and its inputs are a model folder, so it is not cached;
rendering retries once (vl-convert starts a JS engine, which can fail transiently).
"""

from __future__ import annotations

import base64
from pathlib import Path

from prefect import task
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from linklm import store
from linklm.config import EvalConfig
from linklm.evaluation import eval_report, evaluate, summaries
from tasks.retry import only_transient


@task(name="evaluate-model", cache_policy=NO_CACHE, persist_result=False)
def evaluate_model(config: EvalConfig, token: str | None) -> dict:
    return evaluate.evaluate(config, token)


@task(name="score-baselines", cache_policy=NO_CACHE, persist_result=False)
def score_baselines(config: EvalConfig) -> list[dict]:
    """The baselines and the oracle on the evaluation rows, published as a table."""
    systems = evaluate.baseline_systems(config)
    create_table_artifact(
        key="baselines",
        table=summaries.system_rows(systems),
        description=f"baselines and oracle on {config.max_rows or 'all'} {config.split} rows",
    )
    return systems


@task(
    name="render-report",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=1,
    retry_condition_fn=only_transient,
    retry_delay_seconds=1,
)
def render_report(result: dict) -> dict[str, Path]:
    return eval_report.write_evaluation_report(result)


def png_data_url(path: Path) -> str:
    """A PNG as a data: URL, so the artifact shows on a UI that cannot read this disk."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


@task(name="publish-evaluation", cache_policy=NO_CACHE, persist_result=False)
def publish(
    result: dict,
    paths: dict[str, Path],
    key_prefix: str = "evaluation",
    published: str | None = None,
) -> None:
    """Markdown summary, systems table, report link and the baseline chart as artifacts; the
    report link points at the store's copy when the folder was ``published`` there."""
    create_markdown_artifact(
        key=f"{key_prefix}-summary", markdown=summaries.evaluation_markdown(result)
    )
    create_table_artifact(
        key=f"{key_prefix}-systems",
        table=summaries.system_rows(result["systems"]),
        description="model, baselines and oracle on the same rows",
    )
    create_link_artifact(
        key=f"{key_prefix}-report",
        link=store.file_link(paths["html"], result["out_dir"], published),
        link_text=store.file_link(paths["html"], result["out_dir"], published),
    )
    if "png:baselines" in paths:
        create_image_artifact(
            image_url=png_data_url(paths["png:baselines"]),
            key=f"{key_prefix}-baselines-chart",
            description="channel accuracy and throughput MAE by system",
        )
