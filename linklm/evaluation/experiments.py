"""Learning curves and sweeps in words: how trials rank and what their reports say.

The flows train and evaluate each trial; this module turns their rows (training figures plus
headline metrics, or the error of a trial that failed) into a ranking and report text, so a
notebook can rebuild a report from ``sweep.json`` or ``learning_curve.json`` without Prefect.
"""

from __future__ import annotations

from linklm.config import LOWER_IS_BETTER, LearningCurveConfig, SweepConfig
from linklm.errors import first_line
from linklm.evaluation import evaluate, metrics, summaries

TRAINING_FIGURES = ("run_dir", "train_rows", "steps", "train_seconds", "final_eval_loss", "report")


def failed_trial(exc: BaseException) -> dict:
    """The row of a trial that failed: no figures, and the first line of why (its training
    or evaluation raised; the experiment goes on with the next trial)."""
    return dict.fromkeys(TRAINING_FIGURES) | evaluate.headline_of({}) | {"error": first_line(exc)}


def trial_name(trial: dict) -> str:
    """A sweep trial's settings as its row names it: 'mode=lora,lora_r=16'."""
    return ",".join(f"{k}={v}" for k, v in trial.items()) or "defaults"


def ranked(results: list[dict], metric: str) -> list[dict]:
    """Best first; trials without the metric last. An error metric (throughput MAE) is over
    the rows a trial answered, so trials that answered more rows rank first."""
    sign = 1 if metric in LOWER_IS_BETTER else -1

    def key(r: dict) -> tuple:
        share = (metrics.coverage(metric, r) or 0.0) if metric in LOWER_IS_BETTER else 0.0
        return (r.get(metric) is None, -share, sign * (r.get(metric) or 0), r["name"])

    return sorted(results, key=key)


def failures_markdown(rows: list[dict], label: str) -> str:
    """The report's list of failed trials (``label``: the key that names a row), or ''."""
    failed = [f"- {r[label]}: failed: {r['error']}" for r in rows if r.get("error")]
    return "\n## Failed trials\n\n" + "\n".join(failed) + "\n" if failed else ""


def figures_text(point: dict) -> str:
    """A point's headline as its report shows it (percent, Mbps)."""
    top1, mae = (summaries.metric_text(m, point[m]) for m in ("top1", "throughput_mae"))
    return f"top-1 {top1}, throughput MAE {mae}"


def learning_curve_markdown(
    config: LearningCurveConfig, points: list[dict], references: list[dict], test_rows: int
) -> str:
    """The learning curve report's text; ``test_rows``: how many rows each point was
    evaluated on (fewer than ``config.eval_rows`` when the test split is smaller)."""
    rows = [[summaries.fmt(p["train_rows"], "int"), *summaries.trial_cells(p)] for p in points]
    refs = [
        [r["system"], summaries.fmt(r["top1"], "pct"), summaries.fmt(r["throughput_mae"])]
        for r in references
    ]
    return (
        f"# Learning curve: {config.model} ({config.train.mode}), "
        f"{config.train.epochs:g} epochs per size\n\n"
        f"Every point is evaluated on the same {test_rows:,} test rows.\n\n"
        + summaries.table(["train rows", *summaries.TRIAL_HEADER], rows)
        + "\n## Reference lines\n\n"
        + summaries.table(["system", "channel top-1", "throughput MAE"], refs)
        + failures_markdown(points, "train_rows")
    )


def sweep_markdown(config: SweepConfig, results: list[dict], test_rows: int) -> str:
    """The sweep report's text; ``test_rows``: how many rows each trial was evaluated on
    (fewer than ``config.eval_rows`` when the test split is smaller)."""
    rows = [[i + 1, r["name"], *summaries.trial_cells(r)] for i, r in enumerate(results)]
    return (
        f"# Sweep: {len(results)} trials of {config.model}, ranked by {config.metric}\n\n"
        f"Every trial is evaluated on the same {test_rows:,} test rows.\n\n"
        + summaries.table(["rank", "trial", *summaries.TRIAL_HEADER], rows)
        + failures_markdown(results, "name")
    )
