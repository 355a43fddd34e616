"""Predictions made elsewhere (another planner, a spreadsheet, ``flows.predict``'s output)
as the per-row frame every system is scored from.

A predictions file names rows by ``scenario_id`` and gives a channel and a throughput per
row, under the names ``flows.predict`` writes (``recommended_channel_mhz``,
``expected_throughput_mbps``, ``candidate_1_mhz``...) or shorter ones (``channel``,
``throughput``, ``ranked_channels``). A value that is not a number is that row's unusable
answer, counted like a model's invalid one; a row of the split with no prediction is
unanswered, and said so. The file as a whole is refused only where it cannot be read as
predictions at all: no scenario_id, no channel nor throughput, a scenario_id twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from linklm.errors import LinkLMError, first_line
from linklm.evaluation import predictions

CHANNEL_NAMES = ("recommended_channel_mhz", "channel_mhz", "channel", "pred_channel")
THROUGHPUT_NAMES = ("expected_throughput_mbps", "throughput_mbps", "throughput", "pred_throughput")
RANKED_NAMES = ("ranked_channels", "top_channels")
CANDIDATE = re.compile(r"^candidate_(\d+)_mhz$")
SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")


class PredictionsError(LinkLMError):
    """A predictions file that cannot be scored (unreadable, no ids, no answers)."""


@dataclass
class Outside:
    """An outside system's answers on the rows of a split, and what did not match."""

    frame: pl.DataFrame  # predictions.frame's shape, one row per evaluated row
    parts: frozenset[str]  # "channel" and/or "throughput": what the file answers
    rows_in_file: int
    unmatched_ids: int  # predictions of rows not in the evaluated split (ignored)
    missing: int  # evaluated rows the file has no prediction for (unanswered)
    unusable: int  # predictions whose channel or throughput is not a number


def _read(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise PredictionsError(f"{path}: file not found")
    kind = path.suffix.lower()
    if kind not in SUFFIXES:
        raise PredictionsError(f"{path}: unknown kind {kind!r}; give {', '.join(SUFFIXES)}")
    try:
        if kind == ".csv":
            frame = pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")
        elif kind == ".parquet":
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_ndjson(path, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise PredictionsError(f"{path}: not readable as {kind} ({first_line(exc)})") from None
    if frame.height == 0:
        raise PredictionsError(f"{path}: no rows")
    return frame


def _first(frame: pl.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in frame.columns), None)


def _numbers(column: pl.Series) -> pl.Series:
    """Floats where the cell is a number, null elsewhere (text, blank, NaN)."""
    values = column.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    return values.fill_nan(None)


def _ranked(frame: pl.DataFrame) -> pl.Series | None:
    """Each row's channels best first: candidate_k_mhz columns, or one cell of numbers."""
    candidates = sorted(
        (int(m.group(1)), c) for c in frame.columns if (m := CANDIDATE.match(c)) is not None
    )
    if candidates:
        return frame.select(
            pl.concat_list(
                [_numbers(frame[c]).cast(pl.Int64, strict=False) for _, c in candidates]
            ).list.drop_nulls()
        ).to_series()
    name = _first(frame, RANKED_NAMES)
    if name is None:
        return None
    if isinstance(frame.schema[name], pl.List):
        return frame[name].cast(pl.List(pl.Int64), strict=False)
    return (
        frame[name]
        .cast(pl.String)
        .str.extract_all(r"\d+")
        .list.eval(pl.element().cast(pl.Int64, strict=False))
    )


def read(path: str | Path, rows: pl.DataFrame) -> Outside:
    """The file's predictions of ``rows`` (a split's rows, with their truth) as a frame to
    score, matched by scenario_id."""
    path = Path(path)
    frame = _read(path)
    if "scenario_id" not in frame.columns:
        raise PredictionsError(
            f"{path}: no scenario_id column; predictions are matched to rows by it "
            f"(columns: {frame.columns[:12]})"
        )
    channel_col, tput_col = _first(frame, CHANNEL_NAMES), _first(frame, THROUGHPUT_NAMES)
    if channel_col is None and tput_col is None:
        raise PredictionsError(
            f"{path}: no channel ({' / '.join(CHANNEL_NAMES)}) and no throughput "
            f"({' / '.join(THROUGHPUT_NAMES)}) column, so nothing to score"
        )
    ids = _numbers(frame["scenario_id"])
    bad_ids = ids.is_null() | (ids != ids.floor())
    if bad_ids.any():
        row = int(bad_ids.arg_true()[0])
        raise PredictionsError(
            f"{path}: row {row}: scenario_id {frame['scenario_id'][row]!r} is not a whole number"
        )
    given = pl.DataFrame({"scenario_id": ids.cast(pl.Int64)})
    twice = given.filter(pl.col("scenario_id").is_duplicated())["scenario_id"].unique().sort()
    if twice.len():
        raise PredictionsError(
            f"{path}: scenario_id {twice[0]} has more than one prediction ({twice.len()} ids "
            "do); give one per row"
        )
    channel = _numbers(frame[channel_col]) if channel_col else None
    tput = _numbers(frame[tput_col]) if tput_col else None
    unusable = pl.Series([False] * frame.height)
    if channel is not None:
        unusable |= channel.is_null() | (channel != channel.floor()).fill_null(False)
        channel = pl.when(channel == channel.floor()).then(channel).otherwise(None)
        given = given.with_columns(
            pl.select(channel).to_series().cast(pl.Int64).alias("pred_channel")
        )
    if tput is not None:
        unusable |= tput.is_null()
        given = given.with_columns(tput.alias("pred_throughput"))
    ranked = _ranked(frame)
    if ranked is not None:
        given = given.with_columns(ranked.alias("ranked"))
    matched = rows.select("scenario_id").join(given, on="scenario_id", how="left")
    answered_ids = rows["scenario_id"].is_in(given["scenario_id"].implode())
    pred = lambda name, dtype: (  # noqa: E731
        matched[name] if name in matched.columns else pl.Series([None] * rows.height, dtype=dtype)
    )
    scored = predictions.frame(
        rows,
        channel=pred("pred_channel", pl.Int64).fill_null(-1).to_numpy(),
        throughput=pred("pred_throughput", pl.Float64).to_numpy(),
        ranked=pred("ranked", pl.List(pl.Int64)).to_list() if ranked is not None else None,
    )
    if channel is None:
        scored = scored.with_columns(pl.lit(None, dtype=pl.Int64).alias("pred_channel"))
    parts = frozenset(
        p for p, col in (("channel", channel_col), ("throughput", tput_col)) if col is not None
    )
    return Outside(
        frame=scored,
        parts=parts,
        rows_in_file=frame.height,
        unmatched_ids=int((~given["scenario_id"].is_in(rows["scenario_id"].implode())).sum()),
        missing=int((~answered_ids).sum()),
        unusable=int(
            unusable.filter(given["scenario_id"].is_in(rows["scenario_id"].implode())).sum()
        ),
    )
