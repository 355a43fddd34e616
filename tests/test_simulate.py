"""The generator: determinism, the contract's ranges, physics labels, stratify/balance."""

import itertools
import platform
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from linklm import schema
from linklm.config import GenerationConfig
from linklm.data import allocator, physics, simulate


def _chunk(config: GenerationConfig, index: int = 0) -> pl.DataFrame:
    return simulate.generate_chunk(config, simulate.plan_chunks(config)[index])


def test_same_seed_same_rows_and_chunk_independent_of_chunk_count():
    a = GenerationConfig(n_rows=4000, chunk_size=1000, seed=3)
    b = GenerationConfig(n_rows=9000, chunk_size=1000, seed=3)
    assert _chunk(a, 2).equals(_chunk(b, 2))
    assert _chunk(a, 2).equals(_chunk(a, 2))


def test_different_seed_or_chunk_differs():
    config = GenerationConfig(n_rows=2000, chunk_size=1000, seed=3)
    assert not _chunk(config, 0).equals(_chunk(config, 1))
    assert not _chunk(config, 0).equals(_chunk(config.model_copy(update={"seed": 4}), 0))


def test_rows_follow_the_contract():
    df = _chunk(GenerationConfig(n_rows=5000, chunk_size=5000, seed=1))
    assert df.columns == list(schema.COLUMNS)
    assert df.schema == pl.Schema(schema.POLARS_SCHEMA)
    assert df["scenario_id"].to_list() == list(range(5000))
    counts = df["available_channels_mhz"].list.len()
    assert counts.min() >= 10 and counts.max() <= 50
    assert (df["spectral_scan_dbm"].list.len() == counts).all()
    flat = df["available_channels_mhz"].explode()
    assert flat.is_in(schema.CHANNEL_GRID_MHZ).all()
    assert (
        df.select(
            pl.col("available_channels_mhz")
            .list.eval(pl.element().diff().drop_nulls() > 0)
            .list.all()
        )
        .to_series()
        .all()
    )
    assert df.filter(~pl.col("image_obstruction_detected"))[
        "image_obstruction_type"
    ].unique().to_list() == ["None"]
    tput = df["expected_throughput_mbps"]
    assert (tput > 0).all() and (tput <= 10 * df["channel_bandwidth_mhz"]).all()
    assert (
        df.select(pl.col("available_channels_mhz").list.contains(pl.col("recommended_channel_mhz")))
        .to_series()
        .all()
    )
    a = np.array(df["device_a_coordinates"].to_list())
    b = np.array(df["device_b_coordinates"].to_list())
    assert (
        a[:, 0].min() >= 33 and a[:, 0].max() <= 36 and a[:, 1].min() >= 35 and a[:, 1].max() <= 37
    )
    assert np.abs(b[:, :2] - a[:, :2]).max() <= 0.15 + 1e-6
    np.testing.assert_allclose(
        df["link_distance_m"].to_numpy(), physics.haversine_m(a, b), atol=0.051
    )
    for (env, dens), (lo, hi) in schema.NOISE_FLOOR_RANGE.items():
        sub = df.filter((pl.col("environment_type") == env) & (pl.col("area_density") == dens))
        assert sub.height > 0
        assert (
            sub["noise_floor_dbm"].min() >= lo - 0.05 and sub["noise_floor_dbm"].max() <= hi + 0.05
        )


def test_channel_subsets_are_uniform_sorted_and_distinct():
    """Rows of mixed counts; every 3-subset of 6 columns is equally likely (chi-square)."""
    counts = np.tile([3, 1, 6], 20_000)
    flat = simulate._random_subsets(np.random.default_rng(0), counts, 6)
    assert len(flat) == counts.sum() and flat.max() < 6
    rows = np.split(flat.astype(np.int64), np.cumsum(counts)[:-1])
    assert all((np.diff(r) > 0).all() for r in rows)  # ascending, so distinct
    codes = np.array(rows[0::3]) @ np.array([36, 6, 1])
    subsets = [36 * a + 6 * b + c for a, b, c in itertools.combinations(range(6), 3)]
    observed = np.bincount(codes, minlength=216)[subsets]
    assert observed.sum() == 20_000
    expected = 20_000 / len(subsets)
    assert ((observed - expected) ** 2 / expected).sum() < 43.8  # 19 dof, p = 0.001
    singles = np.bincount(np.concatenate(rows[1::3]), minlength=6) / 20_000
    assert np.abs(singles - 1 / 6).max() < 0.015


def test_labels_are_the_physics_of_the_inputs():
    df = _chunk(GenerationConfig(n_rows=3000, chunk_size=3000, seed=11))
    labels = physics.oracle_labels(df)
    assert (labels.recommended_channel_mhz == df["recommended_channel_mhz"].to_numpy()).all()
    np.testing.assert_allclose(
        labels.expected_throughput_mbps, df["expected_throughput_mbps"], atol=5e-4
    )
    np.testing.assert_allclose(labels.snr_db, df["snr_db"], atol=5e-3)
    np.testing.assert_allclose(labels.rssi_dbm, df["rssi_dbm"], atol=5e-3)


def test_physics_by_hand_for_one_link():
    """A link worked through on paper: two channels, the quieter one loses on frequency."""
    row = pl.DataFrame(
        {
            "link_distance_m": [1000.0],
            "tx_power_dbm": [20.0],
            "noise_floor_dbm": [-100.0],
            "channel_bandwidth_mhz": [20],
            "available_channels_mhz": [[5000, 6000]],
            "spectral_scan_dbm": [[-90.0, -91.0]],
            "weather_condition": ["Rain"],
            "environment_type": ["Urban"],
            "area_density": ["Low"],
            "fresnel_clear_pct": [75.0],
            "image_obstruction_type": ["Tree"],
        }
    )
    loss = 0.8 + 0.5 + 1 + 3
    fspl_5000 = 32.45 + 0 + 20 * np.log10(5000)
    fspl_6000 = 32.45 + 0 + 20 * np.log10(6000)
    score_5000 = (20 + 30 - fspl_5000 - loss) - (-90) - 0.25 * 10
    score_6000 = (20 + 30 - fspl_6000 - loss) - (-91) - 0.25 * 9
    assert score_5000 > score_6000
    labels = physics.oracle_labels(row)
    assert labels.recommended_channel_mhz[0] == 5000
    snr = 20 + 30 - fspl_5000 - loss + 90
    assert labels.snr_db[0] == pytest.approx(snr)
    assert labels.expected_throughput_mbps[0] == pytest.approx(200 / (1 + np.exp(-(snr - 25) / 4)))


@pytest.mark.parametrize("balance", ["oversample", "undersample"])
def test_balance_gives_equal_strata(balance):
    config = GenerationConfig(
        n_rows=1000,
        chunk_size=300,
        seed=2,
        stratify_by=("image_obstruction_detected", "environment_type"),
        balance=balance,
    )
    frames = [simulate.generate_chunk(config, p) for p in simulate.plan_chunks(config)]
    df = pl.concat(frames)
    strata = simulate.strata_for(config.stratify_by)
    p = strata.probabilities.max() if balance == "oversample" else strata.probabilities.min()
    per_stratum = round(1000 * p)
    assert df.height == simulate.dataset_rows(config) == per_stratum * 4
    counts = df.group_by("image_obstruction_detected", "environment_type").len()["len"].to_list()
    assert counts == [per_stratum] * 4
    assert df["scenario_id"].is_unique().all()
    # conditioned draws are still labelled by the physics
    assert (
        physics.oracle_labels(df).recommended_channel_mhz
        == df["recommended_channel_mhz"].to_numpy()
    ).all()


def test_natural_frequencies_without_balance():
    df = _chunk(GenerationConfig(n_rows=20000, chunk_size=20000, seed=5))
    expected = np.mean(list(schema.OBSTRUCTION_PROBABILITY.values()))
    assert abs(df["image_obstruction_detected"].mean() - expected) < 0.015
    urban_high = df.filter(
        (pl.col("environment_type") == "Urban") & (pl.col("area_density") == "High")
    )
    assert abs(urban_high["image_obstruction_detected"].mean() - 0.65) < 0.04


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_rows": -5}, "greater than 0"),
        ({"chunk_size": 0}, "greater than 0"),
        ({"balance": "oversample"}, "needs stratify_by"),
        ({"stratify_by": ("colour",)}, "stratify_by"),
        ({"balance": "sideways", "stratify_by": ("area_density",)}, "balance"),
        ({"stratify_by": ("area_density", "area_density"), "balance": "undersample"}, "twice"),
    ],
)
def test_bad_generation_options_fail_fast(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        GenerationConfig(**kwargs)


def test_generating_and_writing_a_dataset_does_not_import_pandas(tmp_path):
    """pandas is not a dependency of generation; importing it by accident (pyarrow's
    ``pa.array`` checks for pandas types) cost 0.4 s of every run's start."""
    code = (
        "import sys, pathlib\n"
        "from linklm.data import dataset\n"
        "from linklm.config import GenerationConfig\n"
        f"dataset.build(pathlib.Path({str(tmp_path)!r}) / 'd', GenerationConfig(n_rows=300, chunk_size=100))\n"
        "print('pandas' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_allocator_setting_is_applied_once_and_reports_whether_it_took():
    first = allocator.keep_freed_memory()
    assert isinstance(first, bool)
    assert allocator.keep_freed_memory() is first  # cached: set once per process
    if sys.platform.startswith("linux") and "glibc" in " ".join(platform.libc_ver()):
        assert first
