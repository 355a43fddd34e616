"""Number-token rendering: every value one known token, scan quietest first, answers decode."""

import numpy as np
import polars as pl
import pytest

from linklm.data import dataset
from linklm.data.prompts import AnswerError
from linklm.model import numtok
from linklm.model.formats import PromptFormat


@pytest.fixture(scope="module")
def rows(small_dataset) -> pl.DataFrame:
    return pl.read_parquet(dataset.chunk_paths(small_dataset)[0]).head(200)


def test_every_prompt_token_is_in_the_vocabulary(rows):
    vocab = set(numtok.vocabulary())
    for prompt in numtok.render_prompts(rows):
        assert set(prompt.split()) <= vocab


def test_scan_pairs_are_the_rows_scan_quietest_last(rows):
    prompt = numtok.render_prompts(rows.head(1))[0]
    row = rows.row(0, named=True)
    tokens = prompt.split(" scan ")[1].split()
    pairs = [(int(c[1:]), int(lvl[1:])) for c, lvl in zip(tokens[::2], tokens[1::2], strict=True)]
    expected = sorted(
        (c, round(s * 10) - round(row["noise_floor_dbm"] * 10))
        for c, s in zip(row["available_channels_mhz"], row["spectral_scan_dbm"], strict=True)
    )
    assert sorted(pairs) == expected
    assert [lvl for _, lvl in pairs] == sorted((lvl for _, lvl in pairs), reverse=True)
    assert f"t{round(row['tx_power_dbm'] * 10)}" in prompt.split()
    assert "rssi" not in prompt and "snr" not in prompt


def test_scan_channels_keeps_the_quietest_pairs_in_the_same_order(rows):
    full = numtok.render_prompts(rows.head(50))
    short = numtok.render_prompts(rows.head(50), scan_channels=12)
    counts = rows.head(50)["available_channels_mhz"].list.len()
    for whole, cut, n in zip(full, short, counts, strict=True):
        head, pairs = whole.split(" scan ")
        assert cut == head + " scan " + " ".join(pairs.split()[-2 * min(n, 12) :])
    assert numtok.render_prompts(rows.head(5), scan_channels=None).equals(full.head(5))


@pytest.mark.parametrize("scan_channels", [None, 8])
def test_relative_levels_are_the_absolute_ones_less_the_quietest(rows, scan_channels):
    absolute = numtok.render_prompts(rows.head(50), scan_channels)
    relative = numtok.render_prompts(rows.head(50), scan_channels, relative_levels=True)
    vocab = set(numtok.vocabulary())
    for whole, rel in zip(absolute, relative, strict=True):
        head, pairs = whole.split(" scan ")
        rel_head, rel_pairs = rel.split(" scan ")
        assert rel_head == head and set(rel.split()) <= vocab
        levels = [int(t[1:]) for t in pairs.split()[1::2]]
        tokens = rel_pairs.split()
        assert tokens[::2] == pairs.split()[::2]  # the same channels in the same order
        assert tokens[-1] == f"l{levels[-1]}"  # the quietest keeps its level above the floor
        assert tokens[1:-1:2] == [f"r{lvl - levels[-1]}" for lvl in levels[:-1]]


def test_a_model_saved_before_relative_levels_still_reads_levels_above_the_floor(rows, tmp_path):
    (tmp_path / "linklm_prompt.json").write_text(
        '{"kind": "numtok-v1", "target": "both", "template": null, "scan_channels": 8}'
    )
    old = PromptFormat.load(tmp_path)
    assert not old.relative_levels
    assert old.user_messages(rows.head(5)) == numtok.render_prompts(rows.head(5), 8).to_list()


def test_answers_decode_to_the_label_within_half_a_bin(rows):
    for text, ch, tput in zip(
        numtok.render_answers(rows),
        rows["recommended_channel_mhz"],
        rows["expected_throughput_mbps"],
        strict=True,
    ):
        parsed = numtok.parse_answer(text)
        assert parsed["recommended_channel_mhz"] == ch
        assert (
            abs(parsed["expected_throughput_mbps"] - tput)
            <= numtok.max_quantisation_error(tput) + 1e-9
        )


def test_bins_cover_every_legal_throughput():
    values = np.array([0.031, 1.0, 100.0, 1600.0])
    bins = numtok.throughput_bin(values)
    assert bins.min() >= 0 and bins.max() == numtok.THROUGHPUT_BINS - 1
    assert np.all(np.abs(numtok.THROUGHPUT_VALUES[bins] - values) / values < 0.03)


@pytest.mark.parametrize(
    "text", ["", "c5180", "q12 c5180", "c5181 q3", "c5180 q999", "c5180 q3 q4", "5180 q3"]
)
def test_malformed_number_answers_raise(text):
    with pytest.raises(AnswerError):
        numtok.parse_answer(text)
