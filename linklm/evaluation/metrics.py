"""Metrics of one system's predictions on a split: the same code scores models and baselines.

A system's predictions are a polars frame (see ``linklm.evaluation.predictions``): per row the truth,
the predicted channel and throughput (null where the system gave no usable answer) and,
where the system can rank, the available channels best first. An unanswered row counts as
wrong for accuracy and is left out of the error metrics, which report how many rows they
cover, so a model cannot look better by refusing to answer.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from linklm import schema

TOP_KS = (1, 3, 5)
SLICE_COLUMNS: tuple[str, ...] = (
    "environment_type",
    "area_density",
    "weather_condition",
    "image_obstruction_detected",
    "channel_bandwidth_mhz",
)
SUB_BAND_MHZ = 100  # confusion over 100 MHz sub-bands keeps a 241-channel grid readable
INVALID = "invalid"
PREDICTED = ("pred_channel", "pred_throughput")


def _sklearn_metrics():
    """scikit-learn's metrics, imported on first use: 2-3 s that a process only answering
    links (predict, serve) never needs."""
    from sklearn import metrics

    return metrics


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def channel_metrics(predictions: pl.DataFrame, ks: tuple[int, ...] = TOP_KS) -> dict:
    """Top-1 (exact match of the answer), top-k from the ranking (``top1_ranked``: the
    ranking's first channel), mean |channel error| in MHz over answered rows."""
    truth = predictions["true_channel"].to_numpy()
    pred = predictions["pred_channel"]
    answered = pred.is_not_null().to_numpy()
    hit = (pred.fill_null(-1).to_numpy() == truth) & answered
    out: dict = {
        "n": predictions.height,
        "answered": float(answered.mean()) if predictions.height else None,
        "top1": float(hit.mean()) if predictions.height else None,
    }
    ranked = predictions["ranked_channels"] if "ranked_channels" in predictions.columns else None
    has_ranking = ranked is not None and ranked.null_count() == 0 and predictions.height > 0
    out["top1_ranked"] = (
        float((ranked.list.first() == predictions["true_channel"]).mean()) if has_ranking else None
    )
    for k in ks:
        if k == 1:
            continue
        if has_ranking:
            top = ranked.list.head(k)
            out[f"top{k}"] = float(top.list.contains(predictions["true_channel"]).mean())
        else:
            out[f"top{k}"] = None
    errors = np.abs(pred.to_numpy()[answered].astype(np.float64) - truth[answered])
    out["abs_error_mhz"] = float(errors.mean()) if len(errors) else None
    return out


def throughput_metrics(predictions: pl.DataFrame) -> dict:
    """MAE, RMSE (Mbps), MAPE (%), R² over the rows with a predicted throughput."""
    pred = predictions["pred_throughput"]
    answered = pred.is_not_null().to_numpy() & ~np.isnan(pred.fill_null(np.nan).to_numpy())
    truth = predictions["true_throughput"].to_numpy()[answered]
    guess = pred.fill_null(np.nan).to_numpy()[answered]
    out: dict = {"n_answered": int(answered.sum()), "answered": float(answered.mean())}
    if not len(truth):
        return out | {"mae": None, "rmse": None, "mape": None, "r2": None}
    out["mae"] = float(_sklearn_metrics().mean_absolute_error(truth, guess))
    out["rmse"] = float(math.sqrt(_sklearn_metrics().mean_squared_error(truth, guess)))
    # Throughput can be ~0 Mbps on a dead link: MAPE over rows with truth >= 1 Mbps only.
    positive = truth >= 1.0
    out["mape"] = (
        float(
            100
            * _sklearn_metrics().mean_absolute_percentage_error(truth[positive], guess[positive])
        )
        if positive.any()
        else None
    )
    out["r2"] = _none_if_nan(_sklearn_metrics().r2_score(truth, guess)) if len(truth) > 1 else None
    return out


def score(predictions: pl.DataFrame, answers: frozenset[str] | None = None) -> dict:
    """Channel and throughput metrics of one system (a key is None where it does not apply).

    ``answers`` names what the system is asked for ("channel", "throughput"; a model's
    prompt format says): those are scored even when no row got an answer (top-1 0 %, not
    "no score"). Without it, a part is scored when some row has it (the baselines)."""
    if answers is None:
        some = {c: predictions[c].null_count() < predictions.height for c in PREDICTED}
        answers = frozenset(
            part
            for part, given in (
                ("channel", some["pred_channel"] or _ranks(predictions)),
                ("throughput", some["pred_throughput"]),
            )
            if given
        )
    return {
        "channel": channel_metrics(predictions) if "channel" in answers else None,
        "throughput": throughput_metrics(predictions) if "throughput" in answers else None,
    }


def answered_parts(target: str) -> frozenset[str]:
    """What a model trained on ``target`` ("channel", "throughput" or "both") answers."""
    return frozenset(("channel", "throughput")) if target == "both" else frozenset((target,))


def _ranks(predictions: pl.DataFrame) -> bool:
    return (
        "ranked_channels" in predictions.columns
        and predictions["ranked_channels"].null_count() < predictions.height
    )


def sub_band(channel: int | None) -> str:
    """'5100-5195' for a channel in that 100 MHz band; 'invalid' for no answer."""
    if channel is None or channel < 0:
        return INVALID
    low = schema.CHANNEL_GRID_MHZ[0] + SUB_BAND_MHZ * (
        (channel - schema.CHANNEL_GRID_MHZ[0]) // SUB_BAND_MHZ
    )
    return f"{low}-{low + SUB_BAND_MHZ - 5}"


def sub_band_labels() -> list[str]:
    return sorted({sub_band(c) for c in schema.CHANNEL_GRID_MHZ}) + [INVALID]


def confusion_by_sub_band(predictions: pl.DataFrame) -> dict:
    """Counts of (true sub-band, predicted sub-band), 'invalid' as the last predicted label."""
    labels = sub_band_labels()
    truth = [sub_band(c) for c in predictions["true_channel"].to_list()]
    pred = [sub_band(c) for c in predictions["pred_channel"].to_list()]
    matrix = _sklearn_metrics().confusion_matrix(truth, pred, labels=labels)
    return {"labels": labels, "matrix": matrix.tolist()}


def per_channel_report(predictions: pl.DataFrame, top_n: int = 10) -> list[dict]:
    """Precision, recall, F1 and support of the ``top_n`` most frequent true channels."""
    truth = predictions["true_channel"].to_numpy()
    pred = predictions["pred_channel"].fill_null(-1).to_numpy()
    values, counts = np.unique(truth, return_counts=True)
    order = np.lexsort((values, -counts))[:top_n]
    chosen = values[order].tolist()
    if not chosen:
        return []
    precision, recall, f1, support = _sklearn_metrics().precision_recall_fscore_support(
        truth, pred, labels=chosen, zero_division=0
    )
    return [
        {
            "channel_mhz": int(c),
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "support": int(s),
        }
        for c, p, r, f, s in zip(chosen, precision, recall, f1, support, strict=True)
    ]


def slice_metrics(
    predictions: pl.DataFrame,
    columns: tuple[str, ...] = SLICE_COLUMNS,
    answers: frozenset[str] | None = None,
) -> list[dict]:
    """Rows, answered share, top-1, top-3, channel error and throughput MAE/RMSE per value
    of every slice column (sorted by column, then value); ``answers`` as in ``score``."""
    out = []
    for column in columns:
        if column not in predictions.columns:
            continue
        for key, part in sorted(
            predictions.partition_by(column, as_dict=True).items(), key=lambda kv: kv[0][0]
        ):
            scored = score(part, answers)
            channel = scored["channel"] or {}
            throughput = scored["throughput"] or {}
            out.append(
                {
                    "column": column,
                    "value": str(key[0]),
                    "n": part.height,
                    "answered": channel.get("answered", throughput.get("answered")),
                    "top1": channel.get("top1"),
                    "top3": channel.get("top3"),
                    "abs_error_mhz": channel.get("abs_error_mhz"),
                    "throughput_mae": throughput.get("mae"),
                    "throughput_rmse": throughput.get("rmse"),
                }
            )
    return out


def throughput_by_bandwidth(
    predictions: pl.DataFrame, answers: frozenset[str] | None = None
) -> list[dict]:
    """Throughput errors per channel bandwidth (the biggest driver of throughput)."""
    return [
        {
            "bandwidth_mhz": int(row["value"]),
            "n": row["n"],
            "mae": row["throughput_mae"],
            "rmse": row["throughput_rmse"],
        }
        for row in slice_metrics(predictions, ("channel_bandwidth_mhz",), answers)
    ]


def coverage(metric: str, metrics: dict | None) -> float | None:
    """The share of the frozen rows with a usable answer of the kind ``metric`` scores; None
    when unknown or when the metric scores the model's ranking of the channels (top1_ranked,
    top3: every row has one, served with ``--fallback ranked``). top1 counts an unanswered
    row as wrong; the throughput errors are over the answered rows only, so two of them
    compare only at equal coverage."""
    if not metrics:
        return None
    if metric.startswith("throughput"):
        return metrics.get("throughput_answered")
    return metrics.get("answered") if metric == "top1" else None
