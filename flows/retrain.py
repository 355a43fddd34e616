"""The retrain flow: fresh data -> challenger -> frozen test rows -> promote only if better.

    python -m flows.retrain                                    # 30k fresh rows, 2,000 steps
    python -m flows.retrain --data-dir runs/data --metric throughput_mae
    python -m flows.retrain --show-champion                    # what serves now, and why

Or ``retrain_flow(RetrainConfig(...))``; prefect.yaml deploys it on a weekly cron schedule
(inactive until someone turns it on). Every challenger and the current champion answer the
same frozen test rows (a dataset made once with a fixed seed, whose SHA256 the registry
keeps and checks), so their scores compare even though each challenger trains on new data.
The decision, both scores and the lineage (data SHA256, configs, code version) go to the
registry file (linklm.serving.registry) and to Prefect artifacts. A challenger that fails or does
not beat the champion never replaces it; a failed one is recorded, then fails the run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.cli import ArgumentParser, add_model_options, model_from_options, run_cli
from flows.data import data_flow
from flows.evaluate import evaluate_flow
from flows.train import train_flow
from linklm import atomic, store
from linklm.config import (
    DataFlowConfig,
    EvalConfig,
    GenerationConfig,
    RetrainConfig,
    TrainConfig,
    intervals_for,
)
from linklm.data import dataset
from linklm.errors import LinkLMError
from linklm.evaluation import evaluate
from linklm.model import models
from linklm.model.training import versions
from linklm.serving import registry
from tasks import registry as t_registry
from tasks import storage as t_storage


class RetrainError(LinkLMError):
    """The challenger failed; the champion is unchanged."""


def where(config: RetrainConfig) -> registry.Location:
    """The registry this retraining reads and decides in: the store's when one is set."""
    return registry.location(config.registry, config.artifacts_url)


def frozen_test(config: RetrainConfig, current: dict) -> dict:
    """Build (once) or verify the frozen test set, and refuse one the registry does not know.

    A set built by an earlier generator version stays the frozen set: it is verified, not
    rebuilt (the data flow would refuse the folder, and a new set would break every score's
    comparability)."""
    made = atomic.read_json_or_none(config.frozen_dir / dataset.GENERATION)
    if made is None or made.get("generator") == dataset.GENERATOR:
        data_flow(
            DataFlowConfig(
                out_dir=config.frozen_dir,
                generation=GenerationConfig(n_rows=config.frozen_rows, seed=config.frozen_seed),
                export_csv=False,
                artifacts_url=store.NO_COPY,  # datasets are lineage here, not results
            )
        )
    manifest = dataset.require_intact(config.frozen_dir)
    frozen = {
        "data_dir": str(config.frozen_dir),
        "dataset_sha256": manifest["dataset_sha256"],
        "rows": manifest["rows"],
        "generation": manifest["generation"],
    }
    registry.check_frozen(current, frozen, where(config))
    return frozen


def fresh_data(config: RetrainConfig) -> tuple[Path, int | None]:
    """The challenger's training data: the folder given, or a new draw with a new seed."""
    if config.data_dir is not None:
        dataset.require_intact(config.data_dir)
        return config.data_dir, None
    seed = config.data_seed if config.data_seed is not None else int(time.time())
    out = config.out_dir / "data" / f"seed-{seed}"
    data_flow(
        DataFlowConfig(
            out_dir=out,
            generation=GenerationConfig(n_rows=config.n_rows, seed=seed),
            export_csv=False,
            artifacts_url=store.NO_COPY,
        )
    )
    return out, seed


def challenger_config(config: RetrainConfig, data_dir: Path, run_name: str) -> TrainConfig:
    steps = config.train.planned_steps(train_rows=int(0.8 * config.n_rows))
    return TrainConfig(
        **config.train.model_dump(),
        artifacts_url=store.NO_COPY,  # retrain publishes the challenger's folder itself
        data_dir=data_dir,
        model=config.model,
        out_dir=config.out_dir / "runs",
        run_name=run_name,
        eval_rows=200,
        seed=config.seed,
        **intervals_for(steps),
    )


def score_on_frozen(config: RetrainConfig, model: str, out_dir: Path) -> tuple[dict | None, str]:
    """(headline metrics on the frozen test rows, or None; what went wrong if None)."""
    state = evaluate_flow(
        EvalConfig(
            artifacts_url=store.NO_COPY,
            model=model,
            data_dir=config.frozen_dir,
            max_rows=config.eval_rows,
            out_dir=out_dir,
            seed=config.seed,
        ),
        return_state=True,
    )
    if not state.is_completed():
        return None, f"evaluation of {model} failed: {state.message}"
    return evaluate.headline(state.result()), ""


def train_challenger(train_config: TrainConfig) -> tuple[dict | None, str]:
    state = train_flow(train_config, return_state=True)
    if not state.is_completed():
        return None, f"training failed: {state.message}"
    summary = state.result()
    if "run_dir" not in summary or "steps" not in summary:
        return None, f"training stopped early: {summary}"
    return summary, ""


def challenge(
    config: RetrainConfig, train_config: TrainConfig, run_dir: Path
) -> tuple[dict | None, dict | None, str]:
    """(training summary, metrics on the frozen rows, what failed): None where a step failed."""
    summary, error = train_challenger(train_config)
    if summary is None:
        return None, None, error
    metrics, error = score_on_frozen(config, summary["run_dir"], run_dir / "eval-frozen")
    return summary, metrics, error


def champion_scores(
    config: RetrainConfig, run_dir: Path, current: dict
) -> tuple[str | None, dict | None, str | None]:
    """(the champion's id, its metrics on the frozen rows now, or None when it cannot be
    scored, and why)."""
    record = current["champion"]
    if record is None:
        return None, None, None
    logger = get_run_logger()
    try:
        champion_dir = registry.champion_run_dir(where(config), current)
    except registry.RegistryError as exc:
        logger.warning("%s", exc)
        return record["id"], None, str(exc)
    metrics, error = score_on_frozen(config, str(champion_dir), run_dir / "eval-champion")
    if error:
        logger.warning("champion %s: %s", record["id"], error)
    return record["id"], metrics, error or None


def lineage(config: RetrainConfig, train_config: TrainConfig, data: Path, seed, frozen) -> dict:
    manifest = dataset.read_manifest(data)
    return {
        "data_dir": str(data),
        "data_sha256": manifest["dataset_sha256"],
        "data_seed": seed,
        "frozen_test_sha256": frozen["dataset_sha256"],
        "retrain_config": config.model_dump(mode="json"),
        "train_config": train_config.model_dump(mode="json"),
        "code_version": versions(),
        "flow_run_id": str(flow_run.get_id()),
    }


@flow(name="retrain")
def retrain_flow(config: RetrainConfig = RetrainConfig()) -> dict:  # noqa: B008 (UI form default)
    """Train a challenger on fresh data and promote it only if it beats the champion."""
    logger = get_run_logger()
    current = registry.read(where(config))  # the decision itself re-reads it under its lock
    frozen = frozen_test(config, current)
    data_dir, seed = fresh_data(config)
    run_name = f"challenger-{time.strftime('%Y%m%d-%H%M%S')}-{str(flow_run.get_id())[:6]}"
    train_config = challenger_config(config, data_dir, run_name)
    run_dir = config.out_dir / "runs" / run_name
    summary, metrics, error = challenge(config, train_config, run_dir)
    if metrics:
        champion_id, champion_metrics, champion_error = champion_scores(config, run_dir, current)
    else:  # a failed challenger is out already: no need to score the champion
        champion_id, champion_metrics = (current["champion"] or {}).get("id"), None
        champion_error = None
    published = None
    if summary:  # runs/<run_name> of the store: where any machine fetches it when it serves
        published = t_storage.publish_run(run_dir, config.artifacts_url, "retrain-artifacts")
    outcome = {
        "id": run_name,
        "run_dir": str(run_dir.resolve()),
        "status": "scored" if metrics else "failed",
        "error": error or None,
        "metric": config.metric,
        "challenger_score": (metrics or {}).get(config.metric),
        "champion_score": (champion_metrics or {}).get(config.metric),
        "metrics": metrics,
        "champion_metrics": champion_metrics,
        "champion_error": champion_error,
        "lineage": lineage(config, train_config, data_dir, seed, frozen),
        "artifacts": published,
    }
    entry = t_registry.record_decision(
        where(config), outcome, champion_id, frozen, config.replace_unscorable_champion
    )
    logger.info("%s: %s (%s)", run_name, entry["decision"], entry["reason"])
    if entry["decision"] == "failed":
        raise RetrainError(f"{run_name}: {error}; the champion ({champion_id}) is unchanged")
    if entry["decision"] == "blocked":
        raise RetrainError(f"{run_name}: champion {champion_id}: {entry['reason']}")
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.retrain", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--show-champion", action="store_true", help="print the current champion and stop"
    )
    add_model_options(parser, RetrainConfig)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config = model_from_options(RetrainConfig, args)
    if args.show_champion:
        record = registry.champion(where(config))
        print(json.dumps(record, indent=2) if record else f"{where(config)}: no champion yet")
        return 0
    # fail before Prefect starts (and before the frozen set is built): registry, data, model
    registry.read(where(config))
    if config.data_dir is not None:
        dataset.read_manifest(config.data_dir)
    models.resolve(config.model)
    entry = retrain_flow(config)
    print(f"{entry['id']}: {entry['decision']}: {entry['reason']}")
    print(f"registry: {where(config)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
