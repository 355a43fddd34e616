"""Evaluate a trained model on a dataset split, beside the baselines and the physics oracle.

The model answers every row greedily (what a user gets) and, with ``rank``, scores every
available channel (top-k). Baselines predict the same rows and all systems go through the
same metric code. Outputs in the evaluation folder: ``predictions.parquet/.csv`` (the
model, per row), ``baseline_predictions.parquet`` (every baseline, per row, with a
``system`` column) and ``metrics.json`` (everything a report shows).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import polars as pl

from linklm import atomic
from linklm.config import EvalConfig
from linklm.data import dataset
from linklm.errors import LinkLMError
from linklm.evaluation import baselines, card, metrics, outside, predictions
from linklm.model import answers, devices, examples, models
from linklm.model.runs import RUN_FILE, run_weights

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
BASELINE_FILE = "baseline_predictions.parquet"
MODEL = "fine-tuned model"
HEURISTIC = "quietest channel (scan)"


class EvaluationError(LinkLMError):
    """The model, run or split to evaluate cannot be used."""


def latest_run(runs_dir: Path) -> Path:
    """The most recently finished training run under ``runs_dir``."""
    finished = sorted(Path(runs_dir).glob(f"*/{RUN_FILE}"), key=lambda p: p.stat().st_mtime)
    if not finished:
        raise EvaluationError(
            f"{runs_dir}: no finished training run; train one (python -m flows.train) or "
            "pass --model"
        )
    return finished[-1].parent


def model_source(config: EvalConfig) -> tuple[str, Path | None]:
    """(what models.load takes, the run folder if the model came from one)."""
    name = config.model
    run_dir = latest_run(config.runs_dir) if name == "latest" else Path(name).expanduser()
    if (run_dir / RUN_FILE).exists():
        weights = run_weights(run_dir)
        if weights is None:
            raise EvaluationError(f"{run_dir}: the run has neither model/ nor adapter/")
        return str(weights), run_dir
    return name, None


def check(config: EvalConfig) -> EvalConfig:
    """Fail fast on what is knowable without loading anything: model, output, dataset.
    Returns the config with 'latest' pinned to the run it found, so the evaluation that
    follows scores that run even if another one finishes meanwhile."""
    if config.predictions is not None:
        return _check_outside(config)
    source, run_dir = model_source(config)
    devices.choose(config.device, announce=False)  # a GPU asked for and not there: said now
    models.resolve(source)
    atomic.check_writable(out_dir_of(config, run_dir))
    if not (Path(config.data_dir) / "manifest.json").exists():
        raise EvaluationError(
            f"{config.data_dir}: no dataset (no manifest.json); build one with python -m flows.data"
        )
    if run_dir is not None:
        manifest = dataset.require_intact(config.data_dir)
        rows = examples.split_rows(config.data_dir, config.split, config.max_rows, manifest)
        rows_trained_on(config, run_dir, manifest, rows["scenario_id"])
    if config.model == "latest":
        return config.model_copy(update={"model": str(run_dir)})
    return config


def rows_trained_on(
    config: EvalConfig, run_dir: Path, manifest: dict, ids: pl.Series
) -> int | None:
    """How many evaluated rows the run trained on (None: unknown, a run saved before its
    split was recorded). Any, outside a deliberate ``split="train"``, is refused: the same
    dataset split another way (other fractions or salt) would score the model on rows it
    learnt, an inflated figure (measured: 97.5 % where the true test score was 94.5 %)."""
    try:
        run = json.loads((Path(run_dir) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    trained = examples.training_rows_among(run, manifest, ids)
    if trained and config.split != "train":
        split = run[examples.SPLIT_KEY]
        raise EvaluationError(
            f"{config.data_dir}: {trained} of the {len(ids)} {config.split} rows are rows "
            f"{run_dir} trained on: it trained on this dataset split train {split['train']}, "
            f"val {split['val']}, salt {split['salt']!r}, and the folder's shards now split it "
            "otherwise, so its score would be inflated; write the shards again with the run's "
            "split (python -m flows.data --train-fraction ... --val-fraction ...), or evaluate "
            "on a dataset it did not train on"
        )
    return trained


def _check_outside(config: EvalConfig) -> EvalConfig:
    """An outside predictions file's evaluation, checked before anything runs: the file,
    the dataset, the output folder."""
    path = Path(config.predictions)
    if not path.is_file():
        raise EvaluationError(f"{path}: predictions file not found")
    if not (Path(config.data_dir) / "manifest.json").exists():
        raise EvaluationError(
            f"{config.data_dir}: no dataset (no manifest.json) to score {path} against; give "
            "the dataset the predictions are of (--truth / --data-dir)"
        )
    atomic.check_writable(predictions_out_dir(config))
    return config


def out_dir_of(config: EvalConfig, run_dir: Path | None) -> Path:
    if config.out_dir is not None:
        return config.out_dir
    if run_dir is None:
        raise EvaluationError(
            f"{config.model}: not a run folder, so there is no default output folder; "
            "pass out_dir (--out-dir)"
        )
    return run_dir / f"eval-{config.split}"


def model_predictions(loaded: models.LoadedModel, rows: pl.DataFrame, config: EvalConfig):
    """The model's predictions frame and its timing."""
    started = time.perf_counter()
    greedy = answers.generate(
        loaded.model, loaded.tokenizer, loaded.prompt_format, rows, config.batch_size
    )
    generate_seconds = time.perf_counter() - started
    ranked = None
    if config.rank and loaded.prompt_format.target != "throughput":
        ranked = [
            [c for c, _ in r]
            for r in answers.rank_channels(
                loaded.model, loaded.tokenizer, loaded.prompt_format, rows, config.batch_size
            )
        ]
    frame = predictions.frame(
        rows,
        channel=greedy.channel if loaded.prompt_format.target != "throughput" else None,
        throughput=greedy.throughput if loaded.prompt_format.target != "channel" else None,
        ranked=ranked,
        raw=greedy.raw,
    )
    timing = {
        "generate_seconds": round(generate_seconds, 2),
        "examples_per_second": round(rows.height / generate_seconds, 1),
        "invalid_answers": int((~greedy.valid).sum()),
        "total_seconds": round(time.perf_counter() - started, 2),
    }
    return frame, timing


def system_scores(
    name: str, kind: str, frame: pl.DataFrame, answers: frozenset[str] | None = None
) -> dict:
    return {"name": name, "kind": kind} | metrics.score(frame, answers)


def standing(systems: list[dict], frames: dict[str, pl.DataFrame] | None = None) -> dict:
    """Where the model stands between the best simple baseline and the oracle.

    ``gap_closed`` = (model - baseline) / (oracle - baseline): 0 is no better than the
    baseline, 1 is the oracle; negative means worse than the baseline. The model's
    throughput error covers the rows it answered; when that is not every row and the
    systems' per-row ``frames`` are given, the baseline and the oracle are scored on those
    same rows (``answered`` says how many), so refusing hard rows closes no gap.
    """
    by_name = {s["name"]: s for s in systems}
    model = next(s for s in systems if s["kind"] == "model")
    oracle = by_name[baselines.ORACLE]
    out: dict = {}
    channel_floor = by_name.get(HEURISTIC)
    if model["channel"] and channel_floor:
        m, b, o = (s["channel"]["top1"] for s in (model, channel_floor, oracle))
        out["channel"] = {
            "model": m,
            "baseline": HEURISTIC,
            "baseline_value": b,
            "oracle": o,
            "gap_closed": (m - b) / (o - b) if o != b else None,
        }
    throughput_floor = by_name.get("per-bandwidth mean throughput")
    if model["throughput"] and throughput_floor:
        m, b, o = (s["throughput"]["mae"] for s in (model, throughput_floor, oracle))
        answered = model["throughput"]["answered"]
        if m is not None and answered < 1 and frames:
            rows = frames[model["name"]]["pred_throughput"].is_not_null()
            b, o = (
                metrics.throughput_metrics(frames[s["name"]].filter(rows))["mae"]
                for s in (throughput_floor, oracle)
            )
        out["throughput"] = {
            "model": m,
            "baseline": throughput_floor["name"],
            "baseline_value": b,
            "oracle": o,
            "answered": answered,
            # None when the model answered no throughput at all (no gap to speak of)
            "gap_closed": (b - m) / (b - o) if m is not None and o != b else None,
        }
    return out


def _split_rows(config: EvalConfig) -> tuple[dict, pl.DataFrame, pl.DataFrame]:
    """(manifest, evaluated rows, training rows the baselines learn from)."""
    manifest = dataset.require_intact(config.data_dir)
    rows = examples.split_rows(config.data_dir, config.split, config.max_rows, manifest)
    if rows.height == 0:
        raise EvaluationError(f"{config.data_dir}: the {config.split} split has no rows")
    train_rows = examples.split_rows(config.data_dir, "train", config.baseline_train_rows, manifest)
    return manifest, rows, train_rows


def baseline_systems(config: EvalConfig) -> list[dict]:
    """Scores of every baseline and the oracle alone (no model): the bar to clear."""
    _, rows, train_rows = _split_rows(config)
    frames = baselines.all_baselines(train_rows, rows, config.seed, config.tabular_rows)
    return [
        system_scores(name, "oracle" if name == baselines.ORACLE else "baseline", frame)
        for name, frame in frames.items()
    ]


def evaluate(config: EvalConfig, token: str | None = None) -> dict:
    """Run one evaluation and write its files; returns what ``metrics.json`` holds. The
    dataset is held shared meanwhile: nobody rewrites the rows being scored."""
    with dataset.reading(config.data_dir):
        return _evaluate(config, token)


def _evaluate(config: EvalConfig, token: str | None) -> dict:
    if config.predictions is not None:
        return _evaluate_outside(config)
    source, run_dir = model_source(config)
    out_dir = out_dir_of(config, run_dir)
    manifest, rows, train_rows = _split_rows(config)
    trained = rows_trained_on(config, run_dir, manifest, rows["scenario_id"]) if run_dir else None
    loaded = models.load(source, token=token, device=devices.choose(config.device))
    log.info("evaluating %s on %d %s rows", source, rows.height, config.split)
    model_frame, timing = model_predictions(loaded, rows, config)
    answered = metrics.answered_parts(loaded.prompt_format.target)
    result = {
        "model": source,
        "run_dir": str(run_dir) if run_dir else None,
        "device": devices.describe(loaded.device),
        "rows_trained_on": trained,  # None: unknown; above 0 only for split "train"
        "prompt_format": loaded.prompt_format.model_dump(),
        "timing": timing,
    }
    result = _scored(config, manifest, rows, train_rows, MODEL, model_frame, answered, result)
    write_evaluation(out_dir, model_frame, result["_baseline_frames"], result)
    if run_dir is not None and config.out_dir is None:
        card.write_card(run_dir)  # the run's own evaluation: its model card carries it
    result["out_dir"] = str(out_dir)
    return result


def _scored(
    config: EvalConfig,
    manifest: dict,
    rows: pl.DataFrame,
    train_rows: pl.DataFrame,
    name: str,
    model_frame: pl.DataFrame,
    answered: frozenset[str],
    about: dict,
) -> dict:
    """What metrics.json holds: ``about`` the system, then its scores beside the
    baselines' and the oracle's on the same rows, where it stands, and its slices. The
    baselines' per-row frames ride along under ``_baseline_frames`` until written."""
    baseline_frames = baselines.all_baselines(
        train_rows, rows, config.seed, tabular_rows=config.tabular_rows
    )
    systems = [system_scores(name, "model", model_frame, answered)] + [
        system_scores(other, "oracle" if other == baselines.ORACLE else "baseline", frame)
        for other, frame in baseline_frames.items()
    ]
    result = {
        "model": about.pop("model"),
        "run_dir": about.pop("run_dir"),
        "data_dir": str(config.data_dir),
        "dataset_sha256": manifest["dataset_sha256"],
        "split": config.split,
        "rows": rows.height,
        **about,
        "systems": systems,
        "standing": standing(systems, {name: model_frame} | baseline_frames),
        "confusion_by_sub_band": metrics.confusion_by_sub_band(model_frame),
        "per_channel": (metrics.per_channel_report(model_frame) if "channel" in answered else []),
        "throughput_by_bandwidth": metrics.throughput_by_bandwidth(model_frame, answered),
        "slices": metrics.slice_metrics(model_frame, answers=answered),
        "config": config.model_dump(mode="json"),
    }
    return result | {"_baseline_frames": baseline_frames}


def _evaluate_outside(config: EvalConfig) -> dict:
    """Score a predictions file made elsewhere like a model run: same rows, metrics,
    baselines, oracle and report."""
    manifest, rows, train_rows = _split_rows(config)
    found = outside.read(config.predictions, rows)
    if found.missing == rows.height:
        raise EvaluationError(
            f"{config.predictions}: none of its {found.rows_in_file} scenario_ids is a row of "
            f"the {config.split} split of {config.data_dir}; are these predictions of that "
            "dataset?"
        )
    if found.missing:
        log.warning(
            "%s: no prediction for %d of the %d %s rows: scored as unanswered",
            config.predictions,
            found.missing,
            rows.height,
            config.split,
        )
    about = {
        "model": str(config.predictions),
        "run_dir": None,
        "predictions": {
            "file": str(config.predictions),
            "rows_in_file": found.rows_in_file,
            "not_in_split": found.unmatched_ids,
            "split_rows_without_prediction": found.missing,
            "unusable_values": found.unusable,
            "answers": sorted(found.parts),
        },
        # what the charts show: the parts the file answers, as a model's target says
        "prompt_format": {"target": "both" if len(found.parts) == 2 else next(iter(found.parts))},
    }
    name = f"predictions ({Path(config.predictions).name})"
    result = _scored(config, manifest, rows, train_rows, name, found.frame, found.parts, about)
    out_dir = predictions_out_dir(config)
    write_evaluation(out_dir, found.frame, result["_baseline_frames"], result)
    result["out_dir"] = str(out_dir)
    return result


def predictions_out_dir(config: EvalConfig) -> Path:
    """Where an outside predictions file's evaluation goes: out_dir, else runs/eval/<stem>."""
    return config.out_dir or Path("runs/eval") / Path(config.predictions).stem


def write_evaluation(
    out_dir: Path,
    model_frame: pl.DataFrame,
    baseline_frames: dict[str, pl.DataFrame],
    result: dict,
) -> None:
    """Predictions first, metrics.json last: a folder with metrics.json is complete."""
    result.pop("_baseline_frames", None)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions.write(model_frame, out_dir)
    stacked = pl.concat(
        [frame.with_columns(system=pl.lit(name)) for name, frame in baseline_frames.items()]
    )
    with atomic.atomic_path(out_dir / BASELINE_FILE) as tmp:
        stacked.write_parquet(tmp)
    atomic.write_json(out_dir / METRICS_FILE, result)


def read_metrics(out_dir: Path) -> dict:
    path = Path(out_dir) / METRICS_FILE
    if not path.exists():
        raise EvaluationError(f"{out_dir}: no {METRICS_FILE} (the evaluation did not finish)")
    return json.loads(path.read_text())


def headline(result: dict, name: str = MODEL) -> dict:
    """One system's main numbers from an evaluation result (None where not applicable)."""
    return headline_of(next(s for s in result["systems"] if s["name"] == name))


def headline_of(system: dict) -> dict:
    """The main numbers of one entry of ``systems`` (None where not applicable)."""
    ch, tp = system.get("channel") or {}, system.get("throughput") or {}
    return {
        "top1": ch.get("top1"),
        "top1_ranked": ch.get("top1_ranked"),
        "top3": ch.get("top3"),
        "throughput_mae": tp.get("mae"),
        "throughput_rmse": tp.get("rmse"),
        # shares of rows with a usable answer: the throughput errors are over those rows only
        "answered": ch.get("answered"),
        "throughput_answered": tp.get("answered"),
    }


def references(result: dict) -> list[dict]:
    """Every baseline's and the oracle's headline numbers (reference lines of a chart)."""
    return [
        {"system": s["name"], "kind": s["kind"]} | headline_of(s)
        for s in result["systems"]
        if s["kind"] != "model"
    ]
