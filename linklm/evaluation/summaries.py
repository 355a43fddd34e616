"""Markdown tables of evaluation results: one place turns numbers into what a person reads.

The same text goes into report.md, the HTML report and the Prefect markdown artifacts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def fmt(value, kind: str = "num") -> str:
    """A table cell: '—' for a metric that does not apply."""
    if value is None:
        return "—"
    if kind == "pct":
        return f"{100 * value:.1f} %"
    if kind == "int":
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def metric_text(metric: str, value) -> str:
    """A metric as the reports show it: a share in percent, an error in its unit, '—' when
    missing (so a command line and its report read alike)."""
    from linklm.evaluation.charts import metric_info  # altair: loaded only where a metric is shown

    return fmt(value, "pct" if metric_info(metric).factor == 100.0 else "num")


def peak_memory_text(peak: dict | None) -> str:
    """A training run's peak memory (run.json's ``peak_memory_mb``; older runs lack it)."""
    peak = peak or {}
    parts = [f"{peak['rss']:,.0f} resident"] if peak.get("rss") else []
    if peak.get("gpu") is not None:
        parts.append(f"{peak['gpu']:,.0f} GPU")
    return ", ".join(parts) or "not measured"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


TRIAL_HEADER = (
    "steps",
    "train s",
    "answered",
    "top-1",
    "top-1 ranked",
    "top-3",
    "throughput MAE",
)


def trial_cells(row: dict) -> list[str]:
    """The cells under ``TRIAL_HEADER`` for one trained-and-evaluated run (curve or sweep).

    "answered" is the share of rows whose answer parsed (a channel-and-throughput answer
    parses whole), which the throughput MAE is over."""
    answered = row.get("answered")
    return [
        fmt(row["steps"], "int"),
        fmt(row["train_seconds"]),
        fmt(answered if answered is not None else row.get("throughput_answered"), "pct"),
        fmt(row["top1"], "pct"),
        fmt(row["top1_ranked"], "pct"),
        fmt(row["top3"], "pct"),
        fmt(row["throughput_mae"]),
    ]


def systems_table(systems: list[dict]) -> str:
    """One row per system: the model, every baseline and the oracle, same metrics."""
    rows = []
    for s in systems:
        ch = s.get("channel") or {}
        tp = s.get("throughput") or {}
        rows.append(
            [
                f"**{s['name']}**" if s["kind"] == "model" else s["name"],
                fmt(ch.get("answered", tp.get("answered")), "pct"),
                fmt(ch.get("top1"), "pct"),
                fmt(ch.get("top1_ranked"), "pct"),
                fmt(ch.get("top3"), "pct"),
                fmt(ch.get("top5"), "pct"),
                fmt(ch.get("abs_error_mhz")),
                fmt(tp.get("mae")),
                fmt(tp.get("rmse")),
                fmt(tp.get("mape")),
                fmt(tp.get("r2")),
            ]
        )
    return table(
        [
            "system",
            "answered",
            "channel top-1",
            "top-1 ranked",
            "top-3",
            "top-5",
            "channel error MHz",
            "throughput MAE Mbps",
            "RMSE Mbps",
            "MAPE %",
            "R²",
        ],
        rows,
    )


def _gap_words(closed: float | None, lead: float) -> str:
    """The gap sentence; a model below the heuristic is said so even where there is no gap
    (the heuristic scores as the oracle on these rows)."""
    if closed is not None and closed >= 0:
        return f", so the model closes {fmt(closed, 'pct')} of the gap between them."
    if lead < 0:
        return f": the model is {100 * -lead:.1f} points **below** the heuristic."
    return "."


def standing_text(standing: dict) -> str:
    """Plain sentences: how far the model got from the simple baseline to the oracle."""
    lines = []
    ch = standing.get("channel")
    if ch:
        closed = ch["gap_closed"]
        lines.append(
            f"- Channel: the model picks the oracle's channel in {fmt(ch['model'], 'pct')} of "
            f"links; the {ch['baseline']} heuristic does in {fmt(ch['baseline_value'], 'pct')}, "
            f"the oracle in {fmt(ch['oracle'], 'pct')}"
            + _gap_words(closed, ch["model"] - ch["baseline_value"])
        )
    tp = standing.get("throughput")
    if tp and tp["model"] is None:
        lines.append(
            f"- Throughput: the model answered no throughput on any link; the {tp['baseline']} "
            f"has an MAE of {fmt(tp['baseline_value'])} Mbps, the oracle {fmt(tp['oracle'])}."
        )
    elif tp:
        closed = tp["gap_closed"]
        answered = tp.get("answered", 1.0)
        over = (
            f" (over the {fmt(answered, 'pct')} of links the model answered, every system on "
            "those links)"
            if answered < 1
            else ""
        )
        lines.append(
            f"- Throughput{over}: MAE {fmt(tp['model'])} Mbps against {fmt(tp['baseline_value'])} "
            f"for the {tp['baseline']} and {fmt(tp['oracle'])} for the oracle"
            + (f" ({fmt(closed, 'pct')} of the gap closed)." if closed is not None else ".")
        )
    return "\n".join(lines) + "\n" if lines else ""


def _answers_line(result: dict) -> str:
    """How many answers were unusable: a model's unparseable ones and its speed, or what
    an outside predictions file lacked."""
    given = result.get("predictions")
    if given:
        return (
            f"\nPredictions file `{given['file']}`: {given['rows_in_file']:,} rows, "
            f"{given['not_in_split']:,} of rows outside this split (ignored); "
            f"**{given['split_rows_without_prediction']:,}** rows of the split without a "
            f"prediction and **{given['unusable_values']:,}** with a value that is not a "
            "number, counted as unanswered.\n"
        )
    timing = result["timing"]
    return (
        f"\nInvalid (unparseable) model answers: **{timing['invalid_answers']}** of "
        f"{result['rows']:,}. Generation: {timing['examples_per_second']} examples/s "
        f"({timing['generate_seconds']} s).\n"
    )


def evaluation_markdown(result: dict) -> str:
    """The evaluation summary: standing, systems, bandwidths, channels, slices, timing."""
    parts = [
        f"# Evaluation: {result['model']}\n",
        f"{result['rows']:,} rows of the **{result['split']}** split of `{result['data_dir']}` "
        f"(dataset SHA256 `{result['dataset_sha256'][:16]}…`).\n",
        "## Where the model stands\n",
        standing_text(result["standing"]),
        "## Model, baselines and oracle on the same rows\n",
        "Top-1 is the greedy answer; *top-1 ranked* and top-k rank every available channel "
        "by the model's likelihood. Unanswered rows count as wrong; error metrics cover "
        "answered rows.\n",
        systems_table(result["systems"]),
        _answers_line(result),
        *_throughput_by_bandwidth(result["throughput_by_bandwidth"]),
        *_per_channel(result["per_channel"]),
        "## Slices\n",
        table(
            [
                "slice",
                "value",
                "rows",
                "answered",
                "top-1",
                "top-3",
                "channel error MHz",
                "throughput MAE",
            ],
            [
                [
                    s["column"],
                    s["value"],
                    fmt(s["n"], "int"),
                    fmt(s.get("answered"), "pct"),
                    fmt(s["top1"], "pct"),
                    fmt(s["top3"], "pct"),
                    fmt(s["abs_error_mhz"]),
                    fmt(s["throughput_mae"]),
                ]
                for s in result["slices"]
            ],
        ),
    ]
    return "\n".join(parts)


def _throughput_by_bandwidth(rows: list[dict]) -> list[str]:
    """The bandwidth table, left out for a model that answers no throughput."""
    if not any(b["mae"] is not None for b in rows):
        return []
    return [
        "## Throughput error by bandwidth\n",
        table(
            ["bandwidth MHz", "rows", "MAE Mbps", "RMSE Mbps"],
            [[b["bandwidth_mhz"], fmt(b["n"], "int"), fmt(b["mae"]), fmt(b["rmse"])] for b in rows],
        ),
    ]


def _per_channel(rows: list[dict]) -> list[str]:
    """The per-channel table, left out for a model that answers no channel."""
    if not rows:
        return []
    return [
        "## Most frequent channels\n",
        table(
            ["channel MHz", "support", "precision", "recall", "F1"],
            [
                [
                    c["channel_mhz"],
                    c["support"],
                    fmt(c["precision"], "pct"),
                    fmt(c["recall"], "pct"),
                    fmt(c["f1"], "pct"),
                ]
                for c in rows
            ],
        ),
    ]


def prediction_markdown(model: str, source: str, summary: dict) -> str:
    """A batch prediction's counts (``Prediction.summary``) as the run's artifact shows them."""
    rows = [
        (k.replace("_", " "), summary[k])
        for k in ("answered", "from_model", "from_fallback", "unusable", "skipped", "out_of_range")
        if k in summary
    ]
    return f"# Predictions of {model}\n\n`{source}` -> `{summary['output']}`\n\n" + table(
        ["rows", "count"], rows
    )


def system_rows(systems: list[dict]) -> list[dict]:
    """Each system's headline figures as a row of a table artifact (fractions, Mbps)."""
    rows = []
    for s in systems:
        ch, tp = s.get("channel") or {}, s.get("throughput") or {}
        rows.append(
            {
                "system": s["name"],
                "channel_top1": ch.get("top1"),
                "channel_top3": ch.get("top3"),
                "channel_error_mhz": ch.get("abs_error_mhz"),
                "throughput_mae": tp.get("mae"),
                "throughput_rmse": tp.get("rmse"),
            }
        )
    return rows
