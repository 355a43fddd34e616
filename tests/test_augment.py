"""Augmentation by dropping losing channels: every variant keeps its exact labels."""

import numpy as np
import polars as pl
import pytest

from linklm import augment, dataset, physics


@pytest.fixture(scope="module")
def rows(small_dataset) -> pl.DataFrame:
    return pl.read_parquet(dataset.chunk_paths(small_dataset)[0])


def test_the_physics_oracle_re_derives_every_variants_labels(rows):
    out = augment.drop_losing_channels(rows, copies=3, seed=1)
    assert out.height == 4 * rows.height
    assert out.head(rows.height).equals(rows)
    labels = physics.oracle_labels(out)
    assert np.array_equal(labels.recommended_channel_mhz, out["recommended_channel_mhz"].to_numpy())
    expected = np.round(labels.expected_throughput_mbps, 3)
    assert np.allclose(expected, out["expected_throughput_mbps"].to_numpy(), atol=1e-9)


def test_variants_are_sub_scans_of_their_row_and_really_differ(rows):
    out = augment.drop_losing_channels(rows, copies=2, seed=0, keep=0.5).tail(2 * rows.height)
    original = dict(zip(rows["scenario_id"], rows["available_channels_mhz"].to_list(), strict=True))
    scans = dict(zip(rows["scenario_id"], rows["spectral_scan_dbm"].to_list(), strict=True))
    shorter = 0
    for sid, channels, scan in out.select("scenario_id", *augment._LISTS).iter_rows():
        full = dict(zip(original[sid], scans[sid], strict=True))
        assert channels == sorted(channels) and set(channels) <= set(full)
        assert scan == [full[c] for c in channels]
        shorter += len(channels) < len(full)
    assert shorter > 0.95 * out.height
    mean_kept = out["available_channels_mhz"].list.len().sum() / (
        2 * rows["available_channels_mhz"].list.len().sum()
    )
    assert 0.45 < mean_kept < 0.6  # losers kept with probability 0.5, the winner always


def test_deterministic_in_the_seed_and_identity_without_copies(rows):
    a = augment.drop_losing_channels(rows.head(100), 2, seed=5)
    assert a.equals(augment.drop_losing_channels(rows.head(100), 2, seed=5))
    assert not a.equals(augment.drop_losing_channels(rows.head(100), 2, seed=6))
    assert augment.drop_losing_channels(rows, 0).equals(rows)
    with pytest.raises(ValueError, match="keep"):
        augment.drop_losing_channels(rows, 1, keep=1.5)
