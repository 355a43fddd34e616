"""Prompts carry inputs only; answers are small JSON objects that parse strictly."""

import json
import re

import polars as pl
import pytest

from linklm.data import dataset, prompts
from linklm.errors import PromptError


@pytest.fixture(scope="module")
def rows(small_dataset) -> pl.DataFrame:
    return pl.read_parquet(dataset.chunk_paths(small_dataset)[0]).head(300)


def test_default_prompt_never_contains_leaky_columns(rows):
    rendered = prompts.render_prompts(rows)
    for name in ("rssi", "snr", "RSSI", "SNR"):
        assert not rendered.str.contains(name).any()
    # the label names appear only in the answer instruction, never with a value
    assert not rendered.str.contains(r"recommended_channel_mhz\W+\d").any()
    # nor their values: the rssi/snr of a row (2 decimals) never appear in its prompt as a
    # number (an snr of 36.53 inside the longitude 36.539464 is another number, not a leak)
    for text, rssi, snr in zip(rendered, rows["rssi_dbm"], rows["snr_db"], strict=True):
        for value in (rssi, snr):
            assert not re.search(rf"(?<![\d.]){re.escape(f'{value:.2f}')}(?!\d)", text), value


def test_prompt_shows_every_input_and_the_scan(rows):
    text = prompts.render_prompts(rows)[0]
    row = rows.row(0, named=True)
    for name in (
        "link_distance_m",
        "tx_power_dbm",
        "noise_floor_dbm",
        "weather_condition",
        "area_density",
    ):
        assert str(row[name]) in text
    scan = " ".join(
        f"{c}:{v}"
        for c, v in zip(row["available_channels_mhz"], row["spectral_scan_dbm"], strict=True)
    )
    assert scan in text


@pytest.mark.parametrize(
    "field", ["rssi_dbm", "snr_db", "recommended_channel_mhz", "expected_throughput_mbps"]
)
def test_templates_asking_for_labels_are_refused(field):
    with pytest.raises(PromptError, match=f"uses {{{field}}}"):
        prompts.template_fields("Link: {link_distance_m} m, hint {" + field + "}")


def test_unknown_field_and_bad_template_are_refused():
    with pytest.raises(PromptError, match="unknown field {colour}"):
        prompts.template_fields("{colour}")
    with pytest.raises(PromptError, match="not a valid format string"):
        prompts.template_fields("{unclosed")


def test_custom_template_renders(rows):
    out = prompts.render_prompts(
        rows.head(2), "d={link_distance_m} bw={channel_bandwidth_mhz} {answer_format}", "channel"
    )
    assert (
        out[0]
        == f"d={rows['link_distance_m'][0]} bw={rows['channel_bandwidth_mhz'][0]} Answer with a JSON object with recommended_channel_mhz."
    )


@pytest.mark.parametrize("target", ["channel", "throughput", "both"])
def test_answers_round_trip(rows, target):
    answers = prompts.render_answers(rows, target)
    for text, ch, tput in zip(
        answers, rows["recommended_channel_mhz"], rows["expected_throughput_mbps"], strict=True
    ):
        parsed = prompts.parse_answer(text, target)
        if target != "throughput":
            assert parsed["recommended_channel_mhz"] == ch
        if target != "channel":
            assert parsed["expected_throughput_mbps"] == pytest.approx(tput, abs=0.0051)
    if target == "both":
        assert list(json.loads(answers[0])) == [
            "recommended_channel_mhz",
            "expected_throughput_mbps",
        ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5180",
        '{"recommended_channel_mhz": 5180',
        '{"recommended_channel_mhz": "5180", "expected_throughput_mbps": 1.0}',
        '{"recommended_channel_mhz": 5180.5, "expected_throughput_mbps": 1.0}',
        '{"recommended_channel_mhz": 5180}',
        '{"recommended_channel_mhz": 5180, "expected_throughput_mbps": NaN}',
        '{"recommended_channel_mhz": true, "expected_throughput_mbps": 1.0}',
        '{"recommended_channel_mhz": 5181, "expected_throughput_mbps": 1.0}',  # off the grid
        '{"recommended_channel_mhz": 5180, "expected_throughput_mbps": -3}',
        '{"recommended_channel_mhz": 5180, "expected_throughput_mbps": 1' + "0" * 400 + "}",
    ],
)
def test_malformed_answers_raise(text):
    with pytest.raises(prompts.AnswerError):
        prompts.parse_answer(text, "both")


def test_answer_with_chatter_around_the_object_parses():
    assert prompts.parse_answer('Sure: {"recommended_channel_mhz": 5180} done', "channel") == {
        "recommended_channel_mhz": 5180
    }
