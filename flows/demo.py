"""The one-command demo: generate -> validate -> shard -> baselines -> train -> evaluate -> report.

    python -m flows.demo                       # small defaults, minutes on a laptop CPU
    python -m flows.demo --max-steps 3000 --n-rows 60000 --out-dir runs/demo-big
    python -m flows.demo --epochs 2 --artifacts-url /content/drive/MyDrive/linklm   # copy results

Everything runs offline: the default model is built locally, nothing is downloaded. The
data, train and evaluate flows run as subflows, so the Prefect UI shows each step, and the
final report (markdown + a self-contained HTML page) says where the fine-tuned model stands
between the baselines and the physics oracle.
"""

from __future__ import annotations

import sys
import time

from prefect import flow, get_run_logger

from flows.cli import ArgumentParser, add_model_options, model_from_options, run_cli
from flows.data import data_flow
from flows.evaluate import evaluate_flow, print_result
from flows.train import train_flow
from linklm import store
from linklm.config import (
    DataFlowConfig,
    DemoConfig,
    EvalConfig,
    GenerationConfig,
    TrainConfig,
    intervals_for,
)
from linklm.model import models
from tasks import evaluate as t_eval
from tasks import storage as t_storage


def configs(config: DemoConfig) -> tuple[DataFlowConfig, TrainConfig, EvalConfig]:
    """The three flows' configs, derived from the demo's few knobs."""
    data_dir = config.out_dir / "data"
    data = DataFlowConfig(
        out_dir=data_dir,
        generation=GenerationConfig(n_rows=config.n_rows, chunk_size=10_000, seed=config.seed),
        artifacts_url=store.NO_COPY,  # the demo publishes its run folder, not the data
    )
    steps = config.train.planned_steps(train_rows=int(0.8 * config.n_rows))  # ~80 % train
    train = TrainConfig(
        **config.train.model_dump(),
        artifacts_url=store.NO_COPY,  # the demo flow publishes the run folder once
        data_dir=data_dir,
        model=config.model,
        out_dir=config.out_dir / "train",
        run_name=f"demo-{time.strftime('%Y%m%d-%H%M%S')}",
        eval_rows=200,
        seed=config.seed,
        **intervals_for(steps),
    )
    evaluation = EvalConfig(
        artifacts_url=store.NO_COPY,
        model=str(train.out_dir / train.run_name),
        data_dir=data_dir,
        max_rows=config.eval_rows,
        seed=config.seed,
    )
    return data, train, evaluation


@flow(name="demo")
def demo_flow(config: DemoConfig = DemoConfig()) -> dict:  # noqa: B008 (UI form default)
    """Run the whole lifecycle on small defaults; returns the evaluation result."""
    logger = get_run_logger()
    started = time.perf_counter()
    data_config, train_config, eval_config = configs(config)
    data = data_flow(data_config)
    logger.info("data: %s rows, splits %s", data["rows"], data["splits"])
    baseline_systems = t_eval.score_baselines(eval_config)
    best = max(
        (s for s in baseline_systems if s["kind"] == "baseline" and s["channel"]),
        key=lambda s: s["channel"]["top1"],
    )
    logger.info(
        "best baseline on channel: %s at %.1f %%", best["name"], 100 * best["channel"]["top1"]
    )
    trained = train_flow(train_config)
    logger.info("trained %s in %s s", trained["run_dir"], trained["train_seconds"])
    result = evaluate_flow(eval_config)
    result["artifacts"] = t_storage.publish_run(
        train_config.out_dir / train_config.run_name, config.artifacts_url, "demo-artifacts"
    )
    result["demo_seconds"] = round(time.perf_counter() - started, 1)
    logger.info(
        "demo finished in %.0f s; report: %s", result["demo_seconds"], result["report"]["html"]
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n")[0])
    add_model_options(parser, DemoConfig)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config = model_from_options(DemoConfig, args)
    models.resolve(config.model)  # an unknown model fails before any row is made
    result = demo_flow(config)
    print_result(result)
    print(f"demo finished in {result['demo_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    run_cli(main)
