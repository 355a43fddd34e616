"""Number tokens: a vocabulary where every number the task turns on is one token.

Measured here (PITFALLS.md, "Making the task learnable"): a 1.1M-parameter model reached
92 % channel accuracy when each channel and each scan level was a single token, and 2-22 %
when digits were split into characters. So the offline default model reads a link as
whitespace-separated tokens from fixed families:

    Urban High Rain Tree b40 t239 f-995 d82 p82 scan ... c5600 r7 c5180 r0 c4940 l12

and answers ``c5115 q201``: the channel, then the throughput as one of 256 log-spaced bins.
Only the inputs the physics of DATA_SPEC.md uses are shown (coordinates, noise, weather
temperature and humidity, utilisation do not enter a label). Scan levels are tenths of a dB
above the link's noise floor (``l``); the dataset stores both to 0.1 dB, so nothing is
rounded away. The default model's prompt keeps only the quietest pairs of the scan
(``SCAN_CHANNELS``) and gives every pair but the quietest its level above the quietest
(``r``, ``PromptFormat.relative_levels``): see ``models.DefaultSpec`` for what that changed.
"""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl

from linklm import schema
from linklm.data.prompts import AnswerError

NAME = "numtok-v1"
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
ROLES = ("user", "model")
FIELDS = ("env", "dens", "wx", "obs", "bw", "tx", "nf", "dist", "fres", "scan")

LEVEL_MAX = round(schema.SCAN_READABLE_OFFSET_DB * 10)  # 255: 25.5 dB above the noise floor
TX_RANGE = (100, 300)  # tenths of dBm
FLOOR_RANGE = (-1150, -820)  # tenths of dBm
DIST_MAX = 300  # hundreds of metres
THROUGHPUT_BINS = 256
# The default model's prompt lists the 8 quietest scan pairs. Measured on 30k training rows,
# the recommended channel is among the K quietest in 96.6 % of rows for K=4, 99.4 % for 8,
# 99.94 % for 16 and 99.99 % for 20 (a channel more than 1.52 dB louder than the quietest
# never wins: 1.25 x that exceeds the frequency term's 1.9 dB span). A training step on 8 pairs
# took 0.44x the time of one on the whole scan (mean 30 pairs) at the same accuracy per step.
SCAN_CHANNELS = 8
THROUGHPUT_EDGES = np.geomspace(0.02, 1600.0, THROUGHPUT_BINS + 1)
THROUGHPUT_VALUES = np.sqrt(THROUGHPUT_EDGES[:-1] * THROUGHPUT_EDGES[1:])


def vocabulary() -> list[str]:
    """Every token, in id order (specials first, so <pad>=0, <eos>=1, <bos>=2)."""
    words = list(SPECIALS) + list(ROLES) + list(FIELDS)
    words += list(schema.ENVIRONMENTS) + list(schema.DENSITIES) + list(schema.WEATHERS)
    words += list(schema.OBSTRUCTION_TYPES)
    words += [f"b{bw}" for bw in schema.BANDWIDTHS]
    words += [f"c{c}" for c in schema.CHANNEL_GRID_MHZ]
    words += [f"l{i}" for i in range(LEVEL_MAX + 1)]
    words += [f"t{i}" for i in range(TX_RANGE[0], TX_RANGE[1] + 1)]
    words += [f"f{i}" for i in range(FLOOR_RANGE[0], FLOOR_RANGE[1] + 1)]
    words += [f"d{i}" for i in range(DIST_MAX + 1)]
    words += [f"p{i}" for i in range(101)]
    words += [f"q{i}" for i in range(THROUGHPUT_BINS)]
    words += [f"r{i}" for i in range(LEVEL_MAX + 1)]
    return words


# Token prefixes of the number families: channel, level, tx, floor, distance, Fresnel,
# throughput bin, level above the quietest.
NUMBER_FAMILIES = ("c", "l", "t", "f", "d", "p", "q", "r")
_NUMBER = re.compile(rf"^([{''.join(NUMBER_FAMILIES)}])(-?\d+)$")


def value_features(words: list[str], dims: int = 8) -> dict[int, np.ndarray]:
    """Smooth features of each number token's value, by token id: ``dims`` numbers per token.

    Position 0 is the value scaled to [-0.5, 0.5] within its family (``l0`` -0.5, ``l255``
    +0.5), the rest are cosines of rising frequency. A model whose embeddings start with these
    (``models.build_default``) begins knowing that ``l41`` lies between ``l40`` and ``l42``,
    which it otherwise learns token by token from the data; measured here, it cut the
    throughput error at 1,000 steps by a third and left the channel accuracy where it was.
    """
    found: dict[str, list[tuple[int, int]]] = {}
    for index, word in enumerate(words):
        match = _NUMBER.match(word)
        if match:
            found.setdefault(match.group(1), []).append((int(match.group(2)), index))
    features: dict[int, np.ndarray] = {}
    for items in found.values():
        values = np.array([v for v, _ in items], dtype=np.float64)
        x = (values - values.min()) / max(values.max() - values.min(), 1.0)
        table = np.stack([x - 0.5] + [np.cos(np.pi * k * x) / 2 for k in range(1, dims)], axis=1)
        features.update({index: row for (_, index), row in zip(items, table, strict=True)})
    return features


def _tenths(expr: pl.Expr) -> pl.Expr:
    return (expr * 10).round(0).cast(pl.Int64)


def _pairs(scan_channels: int | None) -> pl.Expr:
    pairs = pl.format("c{} {}", "available_channels_mhz", "_level_token")
    return pairs.tail(scan_channels) if scan_channels else pairs


def _level_tokens(relative: bool) -> pl.Expr:
    """``l<tenths above the floor>`` for every pair, or with ``relative`` ``r<tenths above
    the quietest channel>`` for every pair but the quietest (the last), which keeps its ``l``.

    Why relative: the pairs come loudest first, so in a causal model no pair can attend to
    the quietest one, which comes last; with its distance to the quietest in its own token a
    pair can weigh "this much louder" against "this much lower in frequency" where it
    stands, and the answer only has to pick the best of those verdicts. The throughput still
    has the quietest pair's level above the floor to start from.
    """
    absolute = pl.format("l{}", "_level")
    if not relative:
        return absolute
    last = pl.int_range(pl.len()).over("_row") == pl.len().over("_row") - 1
    above = pl.col("_level") - pl.col("_level").min().over("_row")
    return pl.when(last).then(absolute).otherwise(pl.format("r{}", above))


def render_prompts(
    df: pl.DataFrame, scan_channels: int | None = None, relative_levels: bool = False
) -> pl.Series:
    """The user message of every row as number tokens (vectorised).

    Values are self-describing tokens (``t239`` is a tx power, ``f-995`` a noise floor), so
    no field names are spent on them. The scan lists its (channel, level) pairs loudest
    first and quietest last (on a tie, the lower frequency last): the same information as
    the file, ordered so the strongest candidates sit right before the answer, at fixed
    distances a rotary-position model finds easily. The model still has to learn the
    physics' trade-off between a quieter channel and a lower frequency.

    ``scan_channels`` keeps only that many of the quietest pairs (None: all of them). A
    shorter prompt is a cheaper training step, and the pairs left out are the loudest ones,
    which rarely win: see ``SCAN_CHANNELS`` for what was measured.
    """
    context = df.select(
        pl.format(
            "{} {} {} {} b{} t{} f{} d{} p{}",
            "environment_type",
            "area_density",
            "weather_condition",
            "image_obstruction_type",
            "channel_bandwidth_mhz",
            _tenths(pl.col("tx_power_dbm")).clip(*TX_RANGE),
            _tenths(pl.col("noise_floor_dbm")).clip(*FLOOR_RANGE),
            (pl.col("link_distance_m") / 100).round(0).cast(pl.Int64).clip(0, DIST_MAX),
            pl.col("fresnel_clear_pct").round(0).cast(pl.Int64).clip(0, 100),
        ).alias("context")
    )["context"]
    pairs = (
        df.select(
            pl.int_range(pl.len()).alias("_row"),
            "available_channels_mhz",
            "spectral_scan_dbm",
            _tenths(pl.col("noise_floor_dbm")).alias("_floor"),
        )
        .explode(["available_channels_mhz", "spectral_scan_dbm"])
        .with_columns(
            (_tenths(pl.col("spectral_scan_dbm")) - pl.col("_floor"))
            .clip(0, LEVEL_MAX)
            .alias("_level")
        )
        .sort("_row", "_level", "available_channels_mhz", descending=[False, True, True])
        .with_columns(_level_tokens(relative_levels).alias("_level_token"))
        .group_by("_row", maintain_order=True)
        .agg(_pairs(scan_channels).str.join(" ").alias("scan"))
    )["scan"]
    return (context + " scan " + pairs).alias("prompt")


def throughput_bin(mbps: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(THROUGHPUT_EDGES, np.asarray(mbps, dtype=np.float64), side="right") - 1
    return np.clip(idx, 0, THROUGHPUT_BINS - 1)


def render_answers(df: pl.DataFrame, target: str = "both") -> pl.Series:
    channel = "c" + df["recommended_channel_mhz"].cast(pl.String)
    tput = pl.Series(throughput_bin(df["expected_throughput_mbps"].to_numpy())).cast(pl.String)
    tput = "q" + tput
    if target == "channel":
        return channel.alias("answer")
    if target == "throughput":
        return tput.alias("answer")
    return (channel + " " + tput).alias("answer")


_ANSWER = {"c": "recommended_channel_mhz", "q": "expected_throughput_mbps"}
_TOKEN = re.compile(r"^([cq])(\d+)$")
_WORD_START = re.compile(r"(?<=\d)(?=[a-z])")


def parse_answer(text: str, target: str = "both") -> dict[str, float | int]:
    """Decode ``c5115 q201`` into the JSON answer's fields (throughput: the bin's centre)."""
    wanted = {"channel": ["c"], "throughput": ["q"], "both": ["c", "q"]}[target]
    text = text.replace("<end_of_turn>", " ").replace("<eos>", " ")
    # an added number token takes the space before it, so a tokenizer with them decodes
    # "c5115 q201" as "c5115q201": a word starts at each letter after a digit
    tokens = _WORD_START.sub(" ", text).split()
    if len(tokens) != len(wanted):
        raise AnswerError(f"expected {len(wanted)} answer token(s), got {text[:80]!r}")
    out: dict[str, float | int] = {}
    for kind, token in zip(wanted, tokens, strict=True):
        match = _TOKEN.match(token)
        if not match or match.group(1) != kind:
            raise AnswerError(f"expected a {_ANSWER[kind]} token, got {token!r}")
        value = int(match.group(2))
        if kind == "c":
            if value not in schema.CHANNEL_GRID_MHZ:
                raise AnswerError(f"channel {value} is not on the 5 GHz grid")
            out[_ANSWER[kind]] = value
        else:
            if value >= THROUGHPUT_BINS:
                raise AnswerError(f"throughput bin {value} out of range")
            out[_ANSWER[kind]] = float(THROUGHPUT_VALUES[value])
    return out


def max_quantisation_error(mbps: float) -> float:
    """Worst-case throughput error of the bins at ``mbps`` (half a bin, relative)."""
    ratio = (THROUGHPUT_EDGES[1] / THROUGHPUT_EDGES[0]) ** 0.5
    return mbps * (ratio - 1) if math.isfinite(mbps) else math.inf
