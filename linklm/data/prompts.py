"""Row -> conversation (inputs only) and model answer -> labels.

A prompt template is a ``str.format``-style string over the input columns of DATA_SPEC.md
and a few rendered helpers (``spectral_scan``, ``answer_format``). Rendering is vectorised
(polars string expressions), so shards of a million rows take seconds. Templates are checked
before use: a field derived from the label (rssi_dbm, snr_db) or a label itself is refused.
"""

from __future__ import annotations

import itertools
import json
import math
import string

import polars as pl

from linklm import schema
from linklm.errors import PromptError

DEFAULT_TEMPLATE = (
    "Plan a 5 GHz point-to-point Wi-Fi link.\n"
    "Sites: A {device_a_coordinates}, B {device_b_coordinates} (lat, lon, elevation m); "
    "distance {link_distance_m} m.\n"
    "Environment: {environment_type}, {area_density} density; Fresnel zone "
    "{fresnel_clear_pct}% clear; obstruction detected: {image_obstruction_detected} "
    "({image_obstruction_type}).\n"
    "Weather: {weather_condition}, {weather_temp_c} C, humidity {weather_humidity_pct}%.\n"
    "Radio: tx power {tx_power_dbm} dBm, bandwidth {channel_bandwidth_mhz} MHz, noise "
    "{noise_dbm} dBm, noise floor {noise_floor_dbm} dBm, utilization "
    "{channel_utilization_pct}%.\n"
    "Spectral scan (channel MHz:dBm): {spectral_scan}\n"
    "{answer_format}"
)

HELPER_FIELDS = ("spectral_scan", "answer_format")
ALLOWED_FIELDS: tuple[str, ...] = schema.INPUT_COLUMNS + ("scenario_id",) + HELPER_FIELDS
TARGET_KEYS = {
    "channel": ("recommended_channel_mhz",),
    "throughput": ("expected_throughput_mbps",),
    "both": ("recommended_channel_mhz", "expected_throughput_mbps"),
}


def template_fields(template: str) -> list[str]:
    """Field names a template uses; refuses label and label-derived fields by name."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise PromptError(f"prompt template is not a valid format string: {exc}") from None
    fields = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name in schema.LEAKY_COLUMNS or name in schema.LABEL_COLUMNS:
            raise PromptError(
                f"prompt template uses {{{name}}}, which is the label or derived from it "
                "and would leak the answer; use input fields only"
            )
        if name not in ALLOWED_FIELDS:
            raise PromptError(
                f"prompt template uses unknown field {{{name}}}; allowed: {', '.join(ALLOWED_FIELDS)}"
            )
        if spec or conversion:
            raise PromptError(f"prompt template field {{{name}}} may not carry a format spec")
        fields.append(name)
    return fields


def answer_format(target: str) -> str:
    keys = TARGET_KEYS[target]
    return "Answer with a JSON object with " + " and ".join(keys) + "."


def joined_pairs(
    df: pl.DataFrame, keys: str, values: str, pair: str, sep: str, quote_keys: bool = False
) -> pl.Series:
    """Render two aligned list columns as 'k<pair>v<sep>k<pair>v...' per row, vectorised.

    A row whose lists are missing, empty or of different lengths (a malformed file's row,
    which the validator quarantines as text) is rendered pair by pair, a missing side as
    ``null``, instead of failing the whole batch."""
    key_lens = df[keys].list.len()
    aligned = ((key_lens == df[values].list.len()) & (key_lens > 0)).fill_null(False)
    if not aligned.all():
        out = [None] * df.height
        good = aligned.arg_true().to_list()
        if good:
            rendered = joined_pairs(df[good], keys, values, pair, sep, quote_keys).to_list()
            for i, text in zip(good, rendered, strict=True):
                out[i] = text
        for i in aligned.not_().arg_true().to_list():
            ks, vs = df[keys][i], df[values][i]
            ks, vs = ([] if ks is None else ks.to_list()), ([] if vs is None else vs.to_list())
            out[i] = sep.join(
                (f'"{_cell(k)}"' if quote_keys else _cell(k)) + pair + _cell(v)
                for k, v in itertools.zip_longest(ks, vs)
            )
        return pl.Series("s", out, dtype=pl.String)
    key = pl.col(keys).cast(pl.String)
    if quote_keys:
        key = pl.concat_str([pl.lit('"'), key, pl.lit('"')])
    exploded = (
        df.select(pl.int_range(pl.len()).alias("_row"), keys, values)
        .explode([keys, values])
        .select(
            "_row", pl.concat_str([key, pl.lit(pair), pl.col(values).cast(pl.String)]).alias("s")
        )
    )
    joined = exploded.group_by("_row", maintain_order=True).agg(pl.col("s").str.join(sep))
    return joined["s"]


def _cell(value) -> str:
    """One list element as polars casts it to text; a missing one as null."""
    return "null" if value is None else pl.Series([value]).cast(pl.String)[0]


def _field_expr(name: str) -> pl.Expr:
    col = pl.col(name)
    if name in ("device_a_coordinates", "device_b_coordinates"):
        return pl.concat_str(
            [pl.lit("["), col.cast(pl.List(pl.String)).list.join(", "), pl.lit("]")]
        ).alias(name)
    if name == "image_obstruction_detected":
        return pl.when(col).then(pl.lit("yes")).otherwise(pl.lit("no"))
    return col.cast(pl.String)


def render_prompts(
    df: pl.DataFrame, template: str | None = None, target: str = "both"
) -> pl.Series:
    """The user message of every row."""
    template = template or DEFAULT_TEMPLATE
    fields = template_fields(template)
    helpers = {"answer_format": pl.lit(answer_format(target))}
    frame = df
    if "spectral_scan" in fields:
        frame = df.with_columns(
            joined_pairs(df, "available_channels_mhz", "spectral_scan_dbm", ":", " ").alias(
                "spectral_scan"
            )
        )
    parts: list[pl.Expr] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        if literal:
            parts.append(pl.lit(literal))
        if name is not None:
            parts.append(
                helpers.get(name, _field_expr(name) if name != "spectral_scan" else pl.col(name))
            )
    return frame.select(pl.concat_str(parts).alias("prompt"))["prompt"]


def render_answers(df: pl.DataFrame, target: str = "both") -> pl.Series:
    """The assistant message: a small JSON object, channel first, throughput to 0.01 Mbps."""
    parts = []
    if target in ("channel", "both"):
        parts.append(
            pl.concat_str(
                [
                    pl.lit('"recommended_channel_mhz": '),
                    pl.col("recommended_channel_mhz").cast(pl.String),
                ]
            )
        )
    if target in ("throughput", "both"):
        tput = pl.col("expected_throughput_mbps").round(2).cast(pl.String)
        parts.append(pl.concat_str([pl.lit('"expected_throughput_mbps": '), tput]))
    return df.select(
        pl.concat_str([pl.lit("{"), pl.concat_str(parts, separator=", "), pl.lit("}")]).alias(
            "answer"
        )
    )["answer"]


class AnswerError(ValueError):
    """A model answer that is not the JSON object the prompt asked for."""


def parse_answer(text: str, target: str = "both") -> dict[str, float | int]:
    """Strictly parse one answer: a JSON object with exactly the target's keys, finite numbers."""
    start, end = text.find("{"), text.find("}")
    if start < 0 or end < start:
        raise AnswerError(f"no JSON object in answer: {text[:80]!r}")
    try:
        obj = json.loads(text[start : end + 1])
    except ValueError as exc:
        raise AnswerError(f"answer is not valid JSON ({exc}): {text[:80]!r}") from None
    keys = TARGET_KEYS[target]
    if not isinstance(obj, dict) or set(obj) != set(keys):
        raise AnswerError(
            f"answer keys {sorted(obj) if isinstance(obj, dict) else obj!r} != {list(keys)}"
        )
    out: dict[str, float | int] = {}
    for key in keys:
        value = obj[key]
        try:  # a JSON integer of hundreds of digits overflows a float
            finite = not isinstance(value, bool) and isinstance(value, int | float)
            finite = finite and math.isfinite(value)
        except OverflowError:
            finite = False
        if not finite:
            raise AnswerError(f"answer {key}={str(value)[:40]} is not a finite number")
        if key == "recommended_channel_mhz":
            if value not in schema.CHANNEL_GRID_MHZ:  # as numtok's parser: a 5 GHz channel
                raise AnswerError(f"answer {key}={value!r} is not a channel of the 5 GHz grid")
            value = int(value)
        elif value < 0:
            raise AnswerError(f"answer {key}={value!r} is negative")
        out[key] = value
    return out
