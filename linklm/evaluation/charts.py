"""Altair charts of evaluation results, built from plain Python data (no I/O).

Every builder takes the dicts and frames that ``linklm.evaluation.metrics`` and the flows already
produce, so a report can be rebuilt from saved JSON without the model. Accuracies arrive as
fractions and are drawn in percent; each chart copies its values into fixed field names
(``value``, ``label`` ...) so metric names with dots or spaces never need Vega escaping.
Rendering and writing files is ``linklm.evaluation.report``'s job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import altair as alt
import polars as pl

INVALID = "invalid"
MAX_SCATTER_POINTS = 5000  # keeps one chart's inline data near 150 kB


class Metric(NamedTuple):
    """How to draw one metric: axis title with unit, factor to that unit, better direction."""

    title: str
    factor: float
    higher_is_better: bool


METRICS: dict[str, Metric] = {
    "top1": Metric("Top-1 channel accuracy (%)", 100.0, True),
    "top1_ranked": Metric("Top-1 ranked channel accuracy (%)", 100.0, True),
    "top3": Metric("Top-3 channel accuracy (%)", 100.0, True),
    "top5": Metric("Top-5 channel accuracy (%)", 100.0, True),
    "answered": Metric("Answered rows (%)", 100.0, True),
    "throughput_mae": Metric("Throughput MAE (Mbps)", 1.0, False),
    "throughput_rmse": Metric("Throughput RMSE (Mbps)", 1.0, False),
    "abs_error_mhz": Metric("Mean |channel error| (MHz)", 1.0, False),
    "eval_loss": Metric("Evaluation loss (nats per token)", 1.0, False),
}
_LOWER_IS_BETTER_HINTS = ("loss", "mae", "rmse", "error", "mape", "perplexity", "seconds")


def metric_info(metric: str) -> Metric:
    """The drawing rule for ``metric``; unknown names (sweep objectives) get a guessed one."""
    if metric in METRICS:
        return METRICS[metric]
    lower = metric.lower()
    higher = not any(hint in lower for hint in _LOWER_IS_BETTER_HINTS)
    return Metric(metric, 1.0, higher)


def _value_scale(info: Metric) -> alt.Scale | alt.UndefinedType:
    """0-100 for a percentage, so bars of 0 % still read as measured (not as an empty chart)."""
    return alt.Scale(domain=[0, 100]) if info.factor == 100.0 else alt.Undefined


def _scaled(value: float | None, factor: float) -> float | None:
    """``value`` in display units, or None where it is missing or not finite."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value) * factor, 4)


def _metric_rows(items: Iterable[dict], key: str, metric: str) -> list[dict]:
    """Rows ``{"label", "value", ...}`` of the items that have ``metric`` (None dropped)."""
    info = metric_info(metric)
    rows = []
    for item in items:
        value = _scaled(item.get(metric), info.factor)
        if value is not None:
            rows.append({"label": str(item[key]), "value": value})
    return rows


def _ranked_bars(
    rows: list[dict],
    metric: str,
    label_title: str,
    title: str,
    extra_tooltips: tuple[alt.Tooltip, ...] = (),
    color: alt.Color | None = None,
    in_given_order: bool = False,
) -> alt.LayerChart:
    """Horizontal bars, best on top, with the value written at the end of each bar.

    ``in_given_order``: the rows are already ranked best first (by more than the value)."""
    info = metric_info(metric)
    # Ranked here, not by a Vega '-x' sort: layered sorts warn in Vega-Lite and ties stay stable.
    ranked = (
        rows
        if in_given_order
        else sorted(rows, key=lambda row: -row["value"] if info.higher_is_better else row["value"])
    )
    base = alt.Chart(alt.Data(values=ranked)).encode(
        y=alt.Y("label:N", title=label_title, sort=[row["label"] for row in ranked]),
        x=alt.X("value:Q", title=info.title, scale=_value_scale(info)),
        tooltip=[
            alt.Tooltip("label:N", title=label_title),
            alt.Tooltip("value:Q", title=info.title, format=".4g"),
            *extra_tooltips,
        ],
    )
    bars = base.mark_bar().encode(color=color) if color is not None else base.mark_bar()
    digits = ".1f" if info.factor == 100.0 else ".3~g"  # a loss of 0.21 keeps its digits
    text = base.mark_text(align="left", dx=3).encode(text=alt.Text("value:Q", format=digits))
    return (bars + text).properties(title=title, width=320, height=alt.Step(22))


def flat_system(system: dict) -> dict:
    """``{"system", "kind", "top1", "throughput_mae"}`` from either accepted shape.

    Flat dicts pass through; ``evaluate``'s per-system dicts (``name``, ``kind`` and the
    nested ``channel``/``throughput`` of ``metrics.score``) are flattened, so the flow can
    hand its result over as it is.
    """
    channel = system.get("channel") or {}
    throughput = system.get("throughput") or {}
    return {
        "system": str(system.get("system", system.get("name"))),
        "kind": str(system.get("kind") or "system"),
        "top1": system.get("top1", channel.get("top1")),
        "throughput_mae": system.get("throughput_mae", throughput.get("mae")),
    }


def baseline_bars(systems: list[dict]) -> alt.HConcatChart:
    """Top-1 accuracy and throughput MAE per system, side by side, coloured by kind.

    ``systems``: ``{"system": str, "top1": float|None, "throughput_mae": float|None}`` with
    an optional ``kind`` (model / baseline / oracle), or ``evaluate``'s nested per-system
    dicts (see ``flat_system``). A system without a metric (a throughput-only baseline has
    no channel) is left out of that panel rather than drawn as zero, which would read as
    "tried and failed".
    """
    flat = [flat_system(system) for system in systems]
    kinds = {system["system"]: system["kind"] for system in flat}
    color = alt.Color("kind:N", title="Kind", scale=alt.Scale(scheme="tableau10"))
    panels = []
    for metric, title in (
        ("top1", "Channel top-1 accuracy by system"),
        ("throughput_mae", "Throughput MAE by system (lower is better)"),
    ):
        rows = [row | {"kind": kinds[row["label"]]} for row in _metric_rows(flat, "system", metric)]
        if rows:
            tooltip = (alt.Tooltip("kind:N", title="Kind"),)
            panels.append(_ranked_bars(rows, metric, "System", title, tooltip, color))
    if not panels:
        raise ValueError("baseline_bars: no system has a top1 or throughput_mae value")
    return alt.hconcat(*panels, title="Model versus baselines").resolve_scale(y="independent")


def _confusion_rows(labels: list[str], matrix: list[list[int]]) -> list[dict]:
    """Long-form cells; the all-zero 'invalid' truth row is dropped (truth is never invalid)."""
    rows = []
    for true_label, counts in zip(labels, matrix, strict=True):
        total = sum(counts)
        if true_label == INVALID and total == 0:
            continue
        for pred_label, count in zip(labels, counts, strict=True):
            share = 100.0 * count / total if total else 0.0
            rows.append(
                {"true": true_label, "pred": pred_label, "count": int(count), "share": share}
            )
    return rows


def confusion_heatmap(confusion: dict) -> alt.LayerChart:
    """True versus predicted 100 MHz sub-band, counts written in the non-empty cells.

    ``confusion``: ``{"labels": [...], "matrix": [[int, ...], ...]}`` with rows = true and
    columns = predicted sub-band, as ``metrics.confusion_by_sub_band`` returns it.
    """
    labels = [str(label) for label in confusion["labels"]]
    matrix = confusion["matrix"]
    if len(matrix) != len(labels) or any(len(row) != len(labels) for row in matrix):
        raise ValueError(
            f"confusion_heatmap: matrix must be {len(labels)}x{len(labels)} to match labels"
        )
    rows = _confusion_rows(labels, matrix)
    peak = max((row["count"] for row in rows), default=0)
    true_labels = [label for label in labels if any(row["true"] == label for row in rows)]
    base = alt.Chart(alt.Data(values=rows)).encode(
        x=alt.X("pred:N", title="Predicted sub-band (MHz)", sort=labels),
        y=alt.Y("true:N", title="True sub-band (MHz)", sort=true_labels),
        tooltip=[
            alt.Tooltip("true:N", title="True sub-band (MHz)"),
            alt.Tooltip("pred:N", title="Predicted sub-band (MHz)"),
            alt.Tooltip("count:Q", title="Rows"),
            alt.Tooltip("share:Q", title="Share of true sub-band (%)", format=".1f"),
        ],
    )
    cells = base.mark_rect().encode(
        color=alt.Color("count:Q", title="Rows", scale=alt.Scale(scheme="blues"))
    )
    text = (
        base.mark_text(fontSize=10)
        .encode(
            text=alt.Text("count:Q"),
            color=alt.condition(alt.datum.count > peak / 2, alt.value("white"), alt.value("black")),
        )
        .transform_filter(alt.datum.count > 0)
    )
    return (cells + text).properties(
        title="Channel confusion by 100 MHz sub-band", width=alt.Step(44), height=alt.Step(26)
    )


def _scatter_sample(predictions: pl.DataFrame, max_points: int, seed: int) -> pl.DataFrame:
    """Rows with a predicted throughput, at most ``max_points`` of them (seeded sample)."""
    answered = predictions.select(
        pl.col("true_throughput").cast(pl.Float64).round(2),
        pl.col("pred_throughput").cast(pl.Float64).round(2),
        pl.col("channel_bandwidth_mhz").cast(pl.Int64),
    ).filter(pl.col("pred_throughput").is_not_null() & pl.col("pred_throughput").is_not_nan())
    if answered.height > max_points:
        answered = answered.sample(n=max_points, seed=seed)
    return answered


def throughput_scatter(
    predictions: pl.DataFrame, max_points: int = MAX_SCATTER_POINTS, seed: int = 0
) -> alt.LayerChart:
    """Predicted versus true throughput with the y = x line of a perfect prediction.

    Rows without a predicted throughput cannot be placed and are left out; the rest are
    sampled down to ``max_points`` (seeded, so the same run draws the same page) because
    every point is inlined into the report page.
    """
    sample = _scatter_sample(predictions, max_points, seed)
    answered = predictions["pred_throughput"].drop_nulls().drop_nans().len()
    shown = f"{sample.height:,} of {answered:,} answered rows"
    peak = max(
        [0.0, *sample["true_throughput"].drop_nulls(), *sample["pred_throughput"].drop_nulls()]
    )
    same_scale = alt.Scale(domain=[0, peak])  # equal axes keep y = x at 45 degrees
    points = (
        alt.Chart(alt.Data(values=sample.to_dicts()))
        .mark_circle(size=14, opacity=0.5)
        .encode(
            x=alt.X("true_throughput:Q", title="True throughput (Mbps)", scale=same_scale),
            y=alt.Y("pred_throughput:Q", title="Predicted throughput (Mbps)", scale=same_scale),
            color=alt.Color(
                "channel_bandwidth_mhz:O",
                title="Channel bandwidth (MHz)",
                scale=alt.Scale(scheme="tableau10"),  # categorical: each bandwidth stands out
            ),
            tooltip=[
                alt.Tooltip("true_throughput:Q", title="True throughput (Mbps)", format=".1f"),
                alt.Tooltip("pred_throughput:Q", title="Predicted throughput (Mbps)", format=".1f"),
                alt.Tooltip("channel_bandwidth_mhz:O", title="Channel bandwidth (MHz)"),
            ],
        )
    )
    diagonal = (
        alt.Chart(alt.Data(values=[{"a": 0.0, "b": peak, "what": "perfect prediction (y = x)"}]))
        .mark_rule(color="gray", strokeDash=[4, 4])
        .encode(x="a:Q", y="a:Q", x2="b:Q", y2="b:Q", tooltip=alt.Tooltip("what:N", title="Line"))
    )
    return alt.layer(diagonal, points).properties(
        title=alt.Title("Predicted versus true throughput", subtitle=shown), width=420, height=420
    )


def slice_bars(slices: list[dict], metric: str = "top1") -> alt.ConcatChart:
    """One bar chart of ``metric`` per slice column (environment, weather, bandwidth ...).

    ``slices``: rows of ``metrics.slice_metrics`` (``column``, ``value``, ``n`` and metrics).
    Columns keep their own value axis, so separate charts read better than one facet.
    """
    info = metric_info(metric)
    columns = list(dict.fromkeys(row["column"] for row in slices))
    panels = []
    for column in columns:
        rows = [
            {"label": str(row["value"]), "value": value, "n": int(row.get("n") or 0)}
            for row in slices
            if row["column"] == column
            and (value := _scaled(row.get(metric), info.factor)) is not None
        ]
        if not rows:
            continue
        unit = " (MHz)" if column.endswith("_mhz") else ""
        axis = column.removesuffix("_mhz").replace("_", " ").capitalize() + unit
        panels.append(
            alt.Chart(alt.Data(values=rows), title=axis)
            .mark_bar()
            .encode(
                x=alt.X("label:N", title=axis, sort=None, axis=alt.Axis(labelAngle=-30)),
                y=alt.Y("value:Q", title=info.title, scale=_value_scale(info)),
                tooltip=[
                    alt.Tooltip("label:N", title=axis),
                    alt.Tooltip("value:Q", title=info.title, format=".2f"),
                    alt.Tooltip("n:Q", title="Rows"),
                ],
            )
            .properties(width=alt.Step(36), height=180)
        )
    if not panels:
        raise ValueError(f"slice_bars: no slice has a value for {metric!r}")
    return alt.concat(*panels, columns=3, title=f"{info.title} by slice")


def learning_curve(
    points: list[dict], references: list[dict], metric: str = "top1"
) -> alt.LayerChart:
    """``metric`` against training rows (log x), baselines and oracle as labelled rules.

    ``points``: ``{"train_rows": int, "system": str, "top1": ..., "throughput_mae": ...}``;
    ``references``: ``{"system": str, "top1": ..., "throughput_mae": ...}``.
    """
    info = metric_info(metric)
    rows = [
        row | {"train_rows": int(point["train_rows"])}
        for point in points
        for row in _metric_rows([point], "system", metric)
    ]
    if any(row["train_rows"] <= 0 for row in rows):
        raise ValueError("learning_curve: train_rows must be positive on a log axis")
    refs = _metric_rows(references, "system", metric)
    if not rows and not refs:
        raise ValueError(f"learning_curve: nothing has a value for {metric!r}")
    right = max((row["train_rows"] for row in rows), default=1)
    x_axis = alt.X("train_rows:Q", title="Training rows (log scale)", scale=alt.Scale(type="log"))
    line = (
        alt.Chart(alt.Data(values=rows))
        .mark_line(point=True)
        .encode(
            x=x_axis,
            y=alt.Y("value:Q", title=info.title),
            color=alt.Color("label:N", title="System"),
            tooltip=[
                alt.Tooltip("label:N", title="System"),
                alt.Tooltip("train_rows:Q", title="Training rows", format=","),
                alt.Tooltip("value:Q", title=info.title, format=".2f"),
            ],
        )
    )
    ref_base = alt.Chart(alt.Data(values=[ref | {"train_rows": right} for ref in refs])).encode(
        y=alt.Y("value:Q", title=info.title),
        tooltip=[
            alt.Tooltip("label:N", title="Reference"),
            alt.Tooltip("value:Q", title=info.title, format=".2f"),
        ],
    )
    rules = ref_base.mark_rule(color="gray", strokeDash=[5, 3])
    labels = ref_base.mark_text(align="right", baseline="bottom", dy=-2, color="dimgray").encode(
        x=x_axis, text="label:N"
    )
    return alt.layer(line, rules, labels).properties(
        title=f"Learning curve: {info.title} versus training rows", width=480, height=300
    )


def _params_text(result: dict, skip: set[str]) -> str:
    """The other scalar fields of a sweep result as 'key=value, ...' for the tooltip."""
    parts = [
        f"{key}={value}"
        for key, value in result.items()
        if key not in skip and isinstance(value, str | int | float | bool)
    ]
    return ", ".join(parts)


def sweep_bars(results: list[dict], metric: str, in_given_order: bool = False) -> alt.LayerChart:
    """Sweep runs ranked by ``metric``, best on top; the tooltip lists each run's settings.

    ``results``: ``{"name": str, metric: float|None, ...}``; runs without the metric (failed
    or unfinished trials) are left out. ``in_given_order``: ``results`` are ranked already,
    best first (the sweep ranks an error metric by the rows answered first, as its table).
    """
    info = metric_info(metric)
    rows = [
        row | {"params": _params_text(result, {"name", metric})}
        for result in results
        for row in _metric_rows([result], "name", metric)
    ]
    if not rows:
        raise ValueError(f"sweep_bars: no result has a value for {metric!r}")
    return _ranked_bars(
        rows,
        metric,
        "Run",
        f"Sweep runs ranked by {info.title}, best on top",
        (alt.Tooltip("params:N", title="Settings"),),
        in_given_order=in_given_order,
    )


def loss_rows(history: list[dict]) -> list[dict]:
    """The finite training and validation losses of a run's ``history.json``, one per point."""
    return [
        {"step": int(h["step"]), "value": float(h[key]), "label": label}
        for h in history
        for key, label in (("loss", "training loss"), ("eval_loss", "validation loss"))
        if key in h and h.get("step") is not None and math.isfinite(float(h[key]))
    ]


def training_curve(history: list[dict]) -> alt.Chart:
    """Training and validation loss against the step, from a run's ``history.json``."""
    rows = loss_rows(history)
    if not rows:
        raise ValueError("training_curve: the history has no loss values")
    return (
        alt.Chart(alt.Data(values=rows))
        .mark_line(point=True)
        .encode(
            x=alt.X("step:Q", title="Training step"),
            y=alt.Y("value:Q", title="Loss (nats per answer token)", scale=alt.Scale(zero=False)),
            color=alt.Color("label:N", title="Loss"),
            tooltip=[
                alt.Tooltip("label:N", title="Loss"),
                alt.Tooltip("step:Q", title="Step", format=","),
                alt.Tooltip("value:Q", title="Loss", format=".4f"),
            ],
        )
        .properties(title="Learning curve of the training run", width=480, height=260)
    )
