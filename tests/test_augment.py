"""Augmentation by dropping losing channels: every variant keeps its exact labels."""

import numpy as np
import polars as pl
import pytest

from linklm.data import augment, dataset, physics


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


def test_shifted_variants_keep_the_channel_and_re_derive_the_rest(rows):
    out = augment.shift_scan_levels(rows, copies=2, seed=3, max_shift_db=5.0)
    assert out.height == 3 * rows.height
    assert out.head(rows.height).equals(rows)
    variants = out.tail(2 * rows.height)
    original = pl.concat([rows, rows])
    assert variants["recommended_channel_mhz"].equals(original["recommended_channel_mhz"])
    # one shift per variant, on the 0.1 dB grid, in (0, 5] dB, the same for every channel
    shift = (
        variants["spectral_scan_dbm"].explode() - original["spectral_scan_dbm"].explode()
    ).to_numpy()
    tenths = np.round(shift * 10)
    assert np.allclose(shift * 10, tenths, atol=1e-6) and tenths.min() >= 1 and tenths.max() <= 50
    per_row = (
        pl.DataFrame(
            {
                "row": np.repeat(
                    np.arange(variants.height), variants["spectral_scan_dbm"].list.len()
                ),
                "t": tenths,
            }
        )
        .group_by("row")
        .agg(pl.col("t").n_unique())
    )
    assert per_row["t"].max() == 1
    # the levels are the 0.1 dB values themselves, as generated: a text prompt shows
    # -91.3, not -91.30000000000001
    levels = variants["spectral_scan_dbm"].explode()
    assert (levels == levels.round(1)).all()
    assert all(len(str(v).split(".")[-1]) == 1 for v in levels.to_list())
    labels = physics.oracle_labels(variants)
    assert np.array_equal(
        labels.recommended_channel_mhz, variants["recommended_channel_mhz"].to_numpy()
    )
    assert np.allclose(
        np.round(labels.expected_throughput_mbps, 3), variants["expected_throughput_mbps"]
    )
    # a louder scan means a lower SNR, so the throughput never rises
    assert (variants["snr_db"] < original["snr_db"]).all()
    assert (variants["expected_throughput_mbps"] <= original["expected_throughput_mbps"]).all()
    assert augment.shift_scan_levels(rows, 0).equals(rows)
    with pytest.raises(ValueError, match="max_shift_db"):
        augment.shift_scan_levels(rows, 1, max_shift_db=0)


def test_a_shift_never_exceeds_its_maximum_on_the_grid(rows):
    small = rows.head(50)
    out = augment.shift_scan_levels(small, copies=1, max_shift_db=0.15).tail(small.height)
    shift = out["spectral_scan_dbm"].explode() - small["spectral_scan_dbm"].explode()
    assert np.allclose(shift.to_numpy(), 0.1)  # 0.15 dB allows 0.1 dB steps, not 0.2
    with pytest.raises(ValueError, match="at least 0.1"):
        augment.shift_scan_levels(small, 1, max_shift_db=0.04)
