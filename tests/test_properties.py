"""Property-based tests (hypothesis): answer rendering/parsing and the validator's row checks."""

import math

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linklm import schema
from linklm.data import export, prompts, reader, rules
from linklm.model import numtok
from linklm.model.formats import PromptFormat

TARGETS = ("channel", "throughput", "both")
KEYS = {
    "channel": {"recommended_channel_mhz"},
    "throughput": {"expected_throughput_mbps"},
    "both": {"recommended_channel_mhz", "expected_throughput_mbps"},
}
channels = st.sampled_from(schema.CHANNEL_GRID_MHZ)
throughputs = st.floats(min_value=0.0, max_value=1600.0, allow_nan=False)


def _labels(channel: int, mbps: float) -> pl.DataFrame:
    return pl.DataFrame({"recommended_channel_mhz": [channel], "expected_throughput_mbps": [mbps]})


@given(channel=channels, mbps=throughputs, target=st.sampled_from(TARGETS))
def test_number_token_answers_round_trip(channel, mbps, target):
    text = numtok.render_answers(_labels(channel, mbps), target)[0]
    parsed = numtok.parse_answer(text + " <end_of_turn>", target)
    assert set(parsed) == KEYS[target]
    if target != "throughput":
        assert parsed["recommended_channel_mhz"] == channel
    if target != "channel":
        bin_ = int(numtok.throughput_bin(mbps))
        assert parsed["expected_throughput_mbps"] == pytest.approx(numtok.THROUGHPUT_VALUES[bin_])
        if numtok.THROUGHPUT_EDGES[0] <= mbps < numtok.THROUGHPUT_EDGES[-1]:
            assert numtok.THROUGHPUT_EDGES[bin_] <= mbps < numtok.THROUGHPUT_EDGES[bin_ + 1]


@given(channel=channels, mbps=throughputs, target=st.sampled_from(TARGETS))
def test_json_answers_round_trip(channel, mbps, target):
    text = prompts.render_answers(_labels(channel, mbps), target)[0]
    parsed = prompts.parse_answer(text, target)
    assert set(parsed) == KEYS[target]
    if target != "throughput":
        assert parsed["recommended_channel_mhz"] == channel
    if target != "channel":
        assert parsed["expected_throughput_mbps"] == pytest.approx(round(mbps, 2), abs=1e-9)


@given(
    text=st.text(max_size=120),
    target=st.sampled_from(TARGETS),
    kind=st.sampled_from(["numtok-v1", "text"]),
)
def test_any_text_parses_to_the_exact_keys_or_raises_answer_error(text, target, kind):
    fmt = PromptFormat(kind=kind, target=target)
    try:
        parsed = fmt.parse(text)
    except prompts.AnswerError:
        return
    assert set(parsed) == KEYS[target]
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in parsed.values())
    if "recommended_channel_mhz" in parsed and kind == "numtok-v1":
        assert parsed["recommended_channel_mhz"] in schema.CHANNEL_GRID_MHZ


@pytest.fixture(scope="module")
def clean_text(small_dataset) -> pl.DataFrame:
    chunk = pl.read_parquet(next((small_dataset / "chunks").glob("*.parquet"))).head(30)
    return export.to_seed_csv_frame(chunk).select(pl.all().cast(pl.String))


def _problems(text: pl.DataFrame) -> pl.DataFrame:
    typed, parse_problems = reader.parse_text_frame(text.select(schema.COLUMNS))
    return rules.check_frame(typed, parse_problems).filter(pl.col("severity") == "error")


NUMERIC_INPUTS = [
    "link_distance_m",
    "noise_floor_dbm",
    "tx_power_dbm",
    "channel_utilization_pct",
    "fresnel_clear_pct",
    "weather_humidity_pct",
]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    row=st.integers(min_value=0, max_value=29),
    column=st.sampled_from(NUMERIC_INPUTS),
    bad=st.sampled_from(["NaN", "inf", "", "abc", "1e309", "-99999"]),
)
def test_one_bad_cell_is_reported_on_its_row_and_nowhere_else(clean_text, row, column, bad):
    assert _problems(clean_text).height == 0  # generated rows validate clean
    broken = clean_text.with_columns(
        pl.when(pl.int_range(pl.len()) == row)
        .then(pl.lit(bad))
        .otherwise(pl.col(column))
        .alias(column)
    )
    problems = _problems(broken)
    assert problems.height >= 1
    assert set(problems["row"]) == {row}  # never another row
    ids = clean_text["scenario_id"].cast(pl.Int64)
    assert set(problems["scenario_id"]) == {ids[row]}
