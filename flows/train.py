"""The train flow: prepare -> train -> save, one Prefect task each.

    python -m flows.train --data-dir runs/data --mode full --max-steps 600
    python -m flows.train --data-dir runs/data --mode lora --model /path/to/checkpoint
    python -m flows.train --run-name my-run --resume              # continue from its last checkpoint
    python -m flows.train --dry-run                               # one batch forward/backward

Or ``train_flow(TrainConfig(...))``. The Hugging Face token, when a hub model needs one,
comes from HF_TOKEN or the Prefect Secret block ``hf-token`` and is never logged.
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from flows.cli import ArgumentParser, add_model_options, model_from_options, run_cli
from linklm.config import TrainConfig
from linklm.data import dataset
from linklm.evaluation import summaries
from linklm.model import models
from linklm.model.runs import check_run_dir, resumed, run_dir_of, run_lock
from linklm.model.training import check_hardware
from tasks import secrets
from tasks import storage as t_storage
from tasks import train as t


def _summary_markdown(summary: dict) -> str:
    rows = [
        ("base model", summary["base_model"]),
        ("mode", summary["config"]["mode"]),
        ("dataset SHA256", f"`{summary['dataset_sha256']}`"),
        ("train rows", summary["train_rows"]),
        ("steps", summary["steps"]),
        ("train seconds", summary["train_seconds"]),
        ("tokens/s", summary["tokens_per_second"]),
        (
            "train loss first -> last",
            f"{summary['first_train_loss']} -> {summary['final_train_loss']}",
        ),
        ("val loss", summary["final_eval_loss"]),
        ("peak memory (MB)", summaries.peak_memory_text(summary.get("peak_memory_mb"))),
    ]
    return (
        "# Training run\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"
    )


@flow(name="train")
def train_flow(config: TrainConfig = TrainConfig()) -> dict:  # noqa: B008 (UI form default)
    """Fine-tune a model on a dataset folder; returns the run summary."""
    logger = get_run_logger()
    if config.run_name is None:
        config = config.model_copy(update={"run_name": run_dir_of(config).name})
    config = resumed(config)  # a resume continues with the settings the run started with
    token = secrets.hf_token()
    prepared = t.prepare(config, token)
    logger.info(
        "training %s (%s) on %d rows", prepared.source, config.mode, len(prepared.train_set)
    )
    if config.dry_run:
        loss = t.dry_run(config, prepared)
        logger.info("dry run: one batch, loss %.4f", loss)
        return {"dry_run": True, "loss": loss, "train_rows": len(prepared.train_set)}
    with run_lock(config):  # one writer per run folder, across fit and save
        trainer, seconds, finished = t.fit(config, prepared)
        if not finished:
            return {
                "stopped_at_step": trainer.state.global_step,
                "run_dir": str(run_dir_of(config)),
            }
        summary = t.save(config, prepared, trainer, seconds, token)
    create_link_artifact(
        key="train-run",
        link=run_dir_of(config).resolve().as_uri(),
        link_text=str(run_dir_of(config)),
    )
    create_markdown_artifact(key="train-summary", markdown=_summary_markdown(summary))
    summary["artifacts"] = t_storage.publish_folder(
        run_dir_of(config), config.artifacts_url, "train", run_dir_of(config).name
    )
    logger.info("run saved in %s", summary["run_dir"])
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.train", description=__doc__.split("\n")[0])
    add_model_options(parser, TrainConfig)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    # a resume continues with the settings the run started with, options typed override
    config = resumed(model_from_options(TrainConfig, args))
    # Fail before Prefect starts when the answer is known already: the dataset, the base
    # model, and the run folder (a finished run is never overwritten; a resume needs one;
    # a run training there now is named).
    check_hardware(config)
    dataset.read_manifest(config.data_dir)
    models.resolve(config.model)
    check_run_dir(config)
    summary = train_flow(config)
    if summary.get("dry_run"):
        print(
            f"dry run ok: loss {summary['loss']:.4f} on one batch of {min(config.batch_size, summary['train_rows'])} rows "
            f"(of {summary['train_rows']:,} training rows)"
        )
    else:
        print(f"run saved in {summary['run_dir']}: val loss {summary['final_eval_loss']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
