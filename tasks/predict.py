"""Tasks of the predict and publish flows. A model lives in memory between load and answer,
so nothing is cached; writing and pushing retry, since disks and networks fail transiently."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from linklm.config import PredictConfig
from linklm.serving import predict, predict_io, publish
from tasks.retry import only_transient


@task(
    name="load-model",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=1,
    retry_condition_fn=only_transient,
)
def load(config: PredictConfig, token: str | None) -> predict.Predictor:
    return predict.Predictor.from_config(config, token)


@task(name="answer-links", cache_policy=NO_CACHE, persist_result=False)
def answer(predictor: predict.Predictor, source: str, split: str) -> predict.Prediction:
    return predictor.predict_source(source, split)


@task(
    name="write-answers",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_condition_fn=only_transient,
)
def write(prediction: predict.Prediction, output: str, source: str) -> tuple[str, str | None]:
    """(the answers file, the list of skipped rows beside it or None)."""
    written = predict_io.write_answers(prediction.rows, output, source)
    return written, predict_io.write_skipped(prediction.problems, output)


@task(name="assemble-upload", cache_policy=NO_CACHE, persist_result=False)
def assemble(
    run_dir: Path, out_dir: Path | None, adapter: bool, allow_unevaluated: bool = False
) -> Path:
    return publish.assemble(run_dir, out_dir, adapter, allow_unevaluated)


@task(name="check-upload-loads", cache_policy=NO_CACHE, persist_result=False)
def check_loads(folder: Path) -> dict:
    return publish.check_loads(folder)


@task(
    name="push-to-hub",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_condition_fn=only_transient,
    retry_delay_seconds=5,
)
def push(folder: Path, repo_id: str, private: bool, token: str | None) -> str:
    return publish.push(folder, repo_id, private, token)
