"""Building blocks the learning-curve and sweep flows share: data on demand, one trial, and
the trials of an experiment run here one after another or fanned out to workers.

With ``fan_out`` (a deployment name, ``trial/trial``), each trial is a run of that
deployment (``run_deployment``), at most ``max_parallel`` at once, so N idle workers run N
trials together. A trial's worker builds the dataset from its seed when it lacks it (the
same rows, the same SHA256) and writes its row and evaluation as JSON to the store, where
the experiment reads them: the workers share nothing but the Prefect API and the store.
"""

from __future__ import annotations

import contextvars
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.runtime import flow_run

from flows.cli import ArgumentParser, add_model_options, model_from_options, run_cli
from flows.data import data_flow
from flows.evaluate import evaluate_flow
from flows.train import train_flow
from linklm import store
from linklm.config import (
    DataFlowConfig,
    EvalConfig,
    ExperimentBase,
    GenerationConfig,
    TrainConfig,
    TrialConfig,
)
from linklm.data import dataset
from linklm.errors import LinkLMError
from linklm.evaluation import evaluate, experiments


class ExperimentError(LinkLMError):
    """No trial of a sweep or learning curve trained and evaluated."""


def attempt(train_config: TrainConfig, config: ExperimentBase) -> tuple[dict, dict | None]:
    """``train_and_evaluate``, or the failed trial's row and no result when one of its
    subflows raised: one failed trial is a row of the experiment, not its end."""
    try:
        return train_and_evaluate(train_config, config)
    except Exception as exc:  # noqa: BLE001 (any failure of the trial's subflows)
        return experiments.failed_trial(exc), None


def trial_config(
    config: ExperimentBase, settings: dict, out_dir: Path, run_name: str
) -> TrainConfig:
    """One trial's training run: ``settings`` (the experiment's TrainSettings under the
    trial's own) on the experiment's data, model and seed, with 200 validation rows and no
    checkpoints (a trial is cheap to redo; checkpoints would cost more than they save)."""
    return TrainConfig(
        **settings,
        data_dir=config.data_dir,
        model=config.model,
        out_dir=out_dir,
        run_name=run_name,
        eval_rows=200,
        save_steps=10**9,
        seed=config.seed,
    )


def ensure_data(config: ExperimentBase) -> Path:
    """The dataset folder, built (or resumed) by the data flow when it has no manifest yet."""
    if not (config.data_dir / "manifest.json").exists():
        dataset.check_buildable(config.data_dir)
        data_flow(
            DataFlowConfig(
                out_dir=config.data_dir,
                generation=GenerationConfig(n_rows=config.n_rows, seed=config.seed),
                artifacts_url=store.NO_COPY,  # the experiment publishes its own folder
            )
        )
    return config.data_dir


def train_and_evaluate(train_config: TrainConfig, config: ExperimentBase) -> tuple[dict, dict]:
    """Train one model (subflow), evaluate it on the shared test rows (subflow).

    Returns (the trial's row: its settings, training figures and headline metrics; the
    evaluation result, whose baselines are the same for every trial).
    """
    trained = train_flow(train_config.model_copy(update={"artifacts_url": store.NO_COPY}))
    result = evaluate_flow(
        EvalConfig(
            artifacts_url=store.NO_COPY,  # the experiment publishes its whole folder
            model=trained["run_dir"],
            data_dir=train_config.data_dir,
            max_rows=config.eval_rows,
            seed=config.seed,
        )
    )
    row = {
        "run_dir": trained["run_dir"],
        "train_rows": trained["train_rows"],
        "steps": trained["steps"],
        "train_seconds": trained["train_seconds"],
        "final_eval_loss": trained["final_eval_loss"],
        "report": result["report"]["html"],
    } | evaluate.headline(result)
    return row, result


POLL_S = 2  # how often a fanned-out trial's state is read


def check_fan_out(config: ExperimentBase) -> str | None:
    """The store fanned-out trials report to; an ExperimentError when fan_out has none."""
    shared = store.artifacts_url(config.artifacts_url)
    if config.fan_out and shared is None:
        raise ExperimentError(
            f"fan_out {config.fan_out!r}: trials on other workers report back through the store; "
            "set artifacts_url or LINKLM_ARTIFACTS_URL (s3://..., a shared folder)"
        )
    return shared


def run_trials(
    config: ExperimentBase, train_configs: list[TrainConfig]
) -> list[tuple[dict, dict | None]]:
    """(row, evaluation or None) per trial, in order: here one after another, or as runs of
    the ``fan_out`` deployment, ``max_parallel`` at once."""
    if not config.fan_out:
        return [attempt(train_config, config) for train_config in train_configs]
    shared = check_fan_out(config)
    batch = store.join(shared, "trials", flow_run.get_name() or "experiment")
    base = ExperimentBase(**config.model_dump(include=set(ExperimentBase.model_fields)))
    base = base.model_copy(update={"fan_out": None})

    def one(train_config: TrainConfig) -> tuple[dict, dict | None]:
        url = store.join(batch, f"{train_config.run_name}.json")
        trial = TrialConfig(experiment=base, train=train_config, result_url=url)
        run = run_deployment(
            config.fan_out,
            parameters={"config": trial.model_dump(mode="json")},
            poll_interval=POLL_S,
        )
        if not run.state.is_completed():
            error = RuntimeError(f"flow run {run.name}: {run.state.name}: {run.state.message}")
            return experiments.failed_trial(error), None
        got = store.read_json(url)
        if got is None:
            error = RuntimeError(f"flow run {run.name} completed but wrote nothing to {url}")
            return experiments.failed_trial(error), None
        return got["row"], got["result"]

    get_run_logger().info(
        "%d trials as runs of %s, %d at once",
        len(train_configs),
        config.fan_out,
        config.max_parallel,
    )
    with ThreadPoolExecutor(config.max_parallel) as pool:
        # each thread runs in a copy of this flow's context: its trials are its subflows
        futures = [pool.submit(contextvars.copy_context().run, one, c) for c in train_configs]
        return [f.result() for f in futures]


@flow(name="trial")
def trial_flow(config: TrialConfig = TrialConfig()) -> dict:  # noqa: B008 (UI form default)
    """One trial of a sweep or learning curve on this worker: the data (built from its seed
    if this worker lacks it), train, evaluate; the row goes to ``result_url``."""
    ensure_data(config.experiment)
    row, result = train_and_evaluate(config.train, config.experiment)
    run_dir = Path(row["run_dir"])
    shared = store.artifacts_url(config.experiment.artifacts_url)
    if shared:  # the trial's run and report, for the experiment's report to link to
        copy = store.run_url(shared, f"{flow_run.get_name() or 'trial'}-{run_dir.name}")
        store.publish_folder(run_dir, copy)
        row["report"] = store.file_link(row["report"], run_dir, copy)
    if config.result_url:
        text = json.dumps({"row": row, "result": result}, default=str)
        store.write_json(config.result_url, json.loads(text))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.experiments", description="Run one trial.")
    add_model_options(parser, TrialConfig)
    config = model_from_options(TrialConfig, parser.parse_args(argv))
    print(json.dumps(trial_flow(config), indent=2, default=str))
    return 0


if __name__ == "__main__":
    run_cli(main)
