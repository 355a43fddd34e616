"""The train flow: prepare -> train -> save, one Prefect task each.

    python -m flows.train --data-dir runs/data --mode full --max-steps 600
    python -m flows.train --data-dir runs/data --mode lora --model /path/to/checkpoint
    python -m flows.train --run-name my-run --resume              # continue from its last checkpoint
    python -m flows.train --dry-run                               # one batch forward/backward

Or ``train_flow(TrainConfig(...))``. The steps are ``linklm.model.training.train``'s, run as
tasks. The Hugging Face token, when a hub model needs one, comes from HF_TOKEN or the Prefect
Secret block ``hf-token`` and is never logged.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from flows.cli import ArgumentParser, add_model_options, model_from_options, run_cli
from linklm import store
from linklm.config import TrainConfig
from linklm.evaluation import card
from linklm.model import memory, training
from tasks import secrets
from tasks import storage as t_storage
from tasks import train as t


@flow(name="train")
def train_flow(config: TrainConfig = TrainConfig()) -> dict:  # noqa: B008 (UI form default)
    """Fine-tune a model on a dataset folder; returns the run summary."""
    logger = get_run_logger()
    logger.info("training %s (%s) into %s", config.model, config.mode, config.out_dir)
    summary = training.train(config, secrets.hf_token(), steps=t.STEPS)
    if summary.get("dry_run"):
        logger.info("dry run: one batch, loss %.4f", summary["loss"])
        return summary
    if "stopped_at_step" in summary:  # a callback stopped it: no finished run to publish
        return summary
    run_dir = Path(summary["run_dir"])
    # runs/<run_name> of the store, where every worker finds it; the UI links there
    summary["artifacts"] = t_storage.publish_run(run_dir, config.artifacts_url, "train-artifacts")
    where = summary["artifacts"] or str(run_dir)
    create_link_artifact(key="train-run", link=store.link(where), link_text=where)
    create_markdown_artifact(
        key="train-summary", markdown="# Training run\n\n" + card.training_table(summary)
    )
    logger.info("run saved in %s", summary["run_dir"])
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.train", description=__doc__.split("\n")[0])
    add_model_options(parser, TrainConfig)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    # fail before Prefect starts when the answer is known already (the checks of
    # training.start: the machine, the dataset, the base model, the run folder)
    config = training.start(model_from_options(TrainConfig, args))
    summary = train_flow(config)
    if summary.get("dry_run"):
        print(
            f"dry run ok: loss {summary['loss']:.4f} on one batch of {min(memory.batch_size(config), summary['train_rows'])} rows "
            f"(of {summary['train_rows']:,} training rows)"
        )
    else:
        print(f"run saved in {summary['run_dir']}: val loss {summary['final_eval_loss']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
