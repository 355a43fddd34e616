"""Vectorised scenario draws of DATA_SPEC.md: one chunk of rows -> one polars frame.

Chunk k draws from ``SeedSequence(seed, spawn_key=(k,))`` (the k-th child that
``SeedSequence(seed).spawn`` would give), so a dataset's bytes depend on the generation
config only, never on how many workers ran or in which order.

Balancing works on strata, the value combinations of ``stratify_by``. The natural
probability of each stratum follows from the spec's tables, so the balanced size is known
up front: every stratum gets ``round(n_rows * p)`` rows with p the largest (oversample) or
smallest (undersample) stratum probability. Row i belongs to stratum ``i % n_strata``, and
its other draws are conditioned on that stratum: fresh rows, never duplicates that could
leak across the train/test split.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import numpy as np
import polars as pl
import pyarrow as pa

from linklm import schema
from linklm.config import GenerationConfig
from linklm.data import physics

# The joint table of the stratifiable draws: (environment, density, obstructed, weather,
# bandwidth) with its natural probability.
_JOINT_COLUMNS = (
    "environment_type",
    "area_density",
    "image_obstruction_detected",
    "weather_condition",
    "channel_bandwidth_mhz",
)


@cache
def joint_table() -> tuple[tuple[tuple, ...], np.ndarray]:
    cells, probs = [], []
    for (env, dens), obstructed, weather, bw in itertools.product(
        schema.ENV_DENSITY, (False, True), schema.WEATHERS, schema.BANDWIDTHS
    ):
        p_obs = schema.OBSTRUCTION_PROBABILITY[(env, dens)]
        p = (1 / len(schema.ENV_DENSITY)) * (p_obs if obstructed else 1 - p_obs)
        cells.append((env, dens, obstructed, weather, bw))
        probs.append(p / len(schema.WEATHERS) / len(schema.BANDWIDTHS))
    return tuple(cells), np.array(probs)


@dataclass(frozen=True)
class Strata:
    """Stratum values, natural probabilities and each cell's stratum index."""

    columns: tuple[str, ...]
    values: tuple[tuple, ...]
    probabilities: np.ndarray
    cell_stratum: np.ndarray


@cache
def strata_for(columns: tuple[str, ...]) -> Strata:
    cells, probs = joint_table()
    idx = [_JOINT_COLUMNS.index(c) for c in columns]
    values = tuple(itertools.product(*(schema.CATEGORIES[c] for c in columns)))
    lookup = {v: i for i, v in enumerate(values)}
    cell_stratum = np.array([lookup[tuple(cell[i] for i in idx)] for cell in cells])
    stratum_p = np.bincount(cell_stratum, weights=probs, minlength=len(values))
    return Strata(tuple(columns), values, stratum_p, cell_stratum)


def dataset_rows(config: GenerationConfig) -> int:
    """Rows in the dataset after balancing."""
    if config.balance == "none":
        return config.n_rows
    strata = strata_for(config.stratify_by)
    p = strata.probabilities.max() if config.balance == "oversample" else strata.probabilities.min()
    per_stratum = max(1, round(config.n_rows * p))
    return per_stratum * len(strata.values)


@dataclass(frozen=True)
class ChunkPlan:
    index: int
    first_id: int
    n_rows: int


def plan_chunks(config: GenerationConfig) -> list[ChunkPlan]:
    total = dataset_rows(config)
    return [
        ChunkPlan(k, start, min(config.chunk_size, total - start))
        for k, start in enumerate(range(0, total, config.chunk_size))
    ]


def chunk_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def _draw_cells(rng: np.random.Generator, plan: ChunkPlan, config: GenerationConfig) -> np.ndarray:
    cells, probs = joint_table()
    if config.balance == "none":
        return rng.choice(len(cells), size=plan.n_rows, p=probs)
    strata = strata_for(config.stratify_by)
    row_stratum = (plan.first_id + np.arange(plan.n_rows)) % len(strata.values)
    out = np.empty(plan.n_rows, dtype=np.int64)
    for s in np.unique(row_stratum):
        members = np.flatnonzero(strata.cell_stratum == s)
        p = probs[members] / probs[members].sum()
        rows = np.flatnonzero(row_stratum == s)
        out[rows] = rng.choice(members, size=len(rows), p=p)
    return out


@dataclass(frozen=True)
class CellColumns:
    """The joint table's cells as arrays, so a chunk indexes them instead of looping."""

    environment_index: np.ndarray
    density_index: np.ndarray
    obstructed: np.ndarray
    weather_index: np.ndarray
    bandwidth: np.ndarray
    env_density: np.ndarray  # index into schema.ENV_DENSITY


@cache
def cell_columns() -> CellColumns:
    cells = joint_table()[0]
    return CellColumns(
        environment_index=np.array([schema.ENVIRONMENTS.index(c[0]) for c in cells]),
        density_index=np.array([schema.DENSITIES.index(c[1]) for c in cells]),
        obstructed=np.array([c[2] for c in cells], dtype=bool),
        weather_index=np.array([schema.WEATHERS.index(c[3]) for c in cells]),
        bandwidth=np.array([c[4] for c in cells], dtype=np.int64),
        env_density=np.array([schema.ENV_DENSITY.index((c[0], c[1])) for c in cells]),
    )


@cache
def channel_grid() -> tuple[np.ndarray, np.ndarray]:
    """The channel grid and its FSPL frequency term ``20 log10(f)``, looked up per pair."""
    grid = np.array(schema.CHANNEL_GRID_MHZ, dtype=np.int64)
    return grid, 20.0 * np.log10(grid.astype(np.float64))


def _uniform_by_group(rng, lo_hi: dict, env_density: np.ndarray) -> np.ndarray:
    """U(lo, hi) per row from its (environment, density) group: ``rng.uniform(lo, hi)``'s
    arithmetic, without its slower per-element broadcasting."""
    table = np.array([lo_hi[k] for k in schema.ENV_DENSITY], dtype=np.float64)
    lo, width = table[:, 0], table[:, 1] - table[:, 0]
    return lo[env_density] + width[env_density] * rng.random(len(env_density))


def _random_subsets(rng: np.random.Generator, counts: np.ndarray, size: int) -> np.ndarray:
    """Column indices of a uniform random ``counts[r]``-subset of ``range(size)`` per row,
    ascending within a row and flattened over rows.

    Each row draws ``counts[r]`` columns with replacement, then redraws its repeats until
    none is left. The distinct values of i.i.d. uniform draws are a uniform random subset of
    their size, and fresh uniform draws top it up without favouring any column, so the final
    subset is uniform. A redraw repeats with probability under ``counts[r] / size``, so a few
    rounds suffice, each only on the rows that still have a repeat. Rows are uint16 (which
    numpy sorts with SIMD, uint8 it does not), padded to ``MAX_CHANNELS`` with distinct
    values above every column, so padding sorts last and never counts as a repeat.
    """
    n, width = len(counts), schema.MAX_CHANNELS
    top = np.iinfo(np.uint16).max
    columns = np.tile(np.arange(top - width + 1, top + 1, dtype=np.uint16), (n, 1))
    keep = np.arange(width) < counts[:, None]
    columns[keep] = rng.integers(0, size, size=int(counts.sum()), dtype=np.uint16)
    rows, block = np.arange(n), columns
    while True:
        block.sort(axis=1)
        repeats = np.flatnonzero(block[:, 1:] == block[:, :-1])  # equal to its left neighbour
        if block is not columns:
            columns[rows] = block
        if not len(repeats):
            return columns[keep]
        row, col = np.divmod(repeats, width - 1)
        block[row, col + 1] = rng.integers(0, size, size=len(repeats), dtype=np.uint16)
        redo = row[np.diff(row, prepend=-1) > 0]  # each row with a repeat, once
        rows, block = rows[redo], block[redo]


def _arrow_array(values: np.ndarray) -> pa.Array:
    """A zero-copy Arrow view of a flat numpy array. Built from its buffer because
    ``pa.array`` checks for pandas types and so imports pandas, 0.4 s of a cold start."""
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:  # Arrow packs booleans into bits
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)]
    )


def _list_array(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.LargeListArray.from_arrays(_arrow_array(offsets), _arrow_array(values))


@cache
def _category_array(values: tuple[str, ...]) -> pa.Array:
    """The category strings as an Arrow array, from buffers (``pa.array`` imports pandas)."""
    encoded = [v.encode() for v in values]
    offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return pa.LargeStringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(data))


def _strings(values: tuple[str, ...], index: np.ndarray) -> pa.Array:
    return _category_array(values).take(_arrow_array(index))


@cache
def loss_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loss per category, indexed like the draws: weather (dB/km) by ``schema.WEATHERS``,
    clutter (dB/km) by ``schema.ENV_DENSITY``, obstruction (dB) by ``OBSTRUCTION_TYPES``."""
    return (
        np.array([schema.WEATHER_LOSS_DB_PER_KM[w] for w in schema.WEATHERS]),
        np.array([schema.DENSITY_LOSS_DB_PER_KM[k] for k in schema.ENV_DENSITY]),
        np.array([schema.OBSTRUCTION_LOSS_DB[o] for o in schema.OBSTRUCTION_TYPES]),
    )


def generate_chunk(config: GenerationConfig, plan: ChunkPlan) -> pl.DataFrame:
    """Draw, label and round one chunk of rows, in DATA_SPEC.md column order."""
    return pl.from_arrow(generate_table(config, plan))


def generate_table(config: GenerationConfig, plan: ChunkPlan) -> pa.Table:
    """``generate_chunk`` as the Arrow table the chunk file is written from: numpy arrays
    wrapped without copies, no frame operations (each one a hand-off to polars' thread
    pool, which two chunk workers on two cores wait on)."""
    rng = chunk_rng(config.seed, plan.index)
    n = plan.n_rows
    cell = _draw_cells(rng, plan, config)
    cols = cell_columns()
    obstructed, bandwidth, env_dens = (
        cols.obstructed[cell],
        cols.bandwidth[cell],
        cols.env_density[cell],
    )
    dec = schema.DECIMALS

    lat = rng.uniform(*schema.LAT_RANGE, size=n)
    lon = rng.uniform(*schema.LON_RANGE, size=n)
    a = np.column_stack([lat, lon, rng.uniform(*schema.ELEVATION_RANGE, size=n)])
    b = np.column_stack(
        [
            lat + rng.uniform(-schema.B_OFFSET_DEG, schema.B_OFFSET_DEG, size=n),
            lon + rng.uniform(-schema.B_OFFSET_DEG, schema.B_OFFSET_DEG, size=n),
            rng.uniform(*schema.ELEVATION_RANGE, size=n),
        ]
    )
    for coords in (a, b):
        coords[:, :2] = np.round(coords[:, :2], dec["latlon"])
        coords[:, 2] = np.round(coords[:, 2], dec["elevation"])
    distance = np.round(physics.haversine_m(a, b), dec["link_distance_m"])

    floor = np.round(_uniform_by_group(rng, schema.NOISE_FLOOR_RANGE, env_dens), 1)
    noise = np.round(floor + rng.uniform(*schema.NOISE_ABOVE_FLOOR, size=n), 1)
    tx = np.round(rng.uniform(*schema.TX_POWER_RANGE, size=n), 1)
    utilization = np.round(_uniform_by_group(rng, schema.UTILIZATION_RANGE, env_dens), 1)
    fresnel = np.round(_uniform_by_group(rng, schema.FRESNEL_RANGE, env_dens), 1)
    temp = np.round(rng.uniform(*schema.TEMP_RANGE, size=n), 1)
    humidity = np.round(rng.uniform(*schema.HUMIDITY_RANGE, size=n), 1)
    obstruction = np.where(obstructed, rng.integers(0, len(schema.OBSTRUCTION_TYPES), size=n), 0)

    # Available channels: a random subset of the grid per row, ascending.
    grid, grid_db = channel_grid()
    counts = rng.integers(schema.MIN_CHANNELS, schema.MAX_CHANNELS + 1, size=n)
    grid_index = _random_subsets(rng, counts, len(grid))
    channels = grid[grid_index]
    # scan = floor + offset + max(0, N(utilization / 100 * 8, 1.5)), one draw per channel
    level = rng.standard_normal(len(channels))
    level *= 1.5
    level += np.repeat(utilization / 100.0 * 8.0, counts)
    np.maximum(level, 0.0, out=level)
    level += np.repeat(floor + schema.SCAN_FLOOR_OFFSET_DB, counts)
    scan = np.round(level, dec["spectral_scan_dbm"], out=level)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    coord_offsets = np.arange(0, 3 * n + 1, 3, dtype=np.int64)

    weather_loss, density_loss, obstruction_loss = loss_tables()
    weather = cols.weather_index[cell]
    link = physics.LinkInputs(
        distance_m=distance,
        tx_power_dbm=tx,
        noise_floor_dbm=floor,
        bandwidth_mhz=bandwidth,
        excess_loss_db=physics.excess_loss_from(
            weather_loss[weather],
            density_loss[env_dens],
            obstruction_loss[obstruction],
            distance,
            fresnel,
        ),
    )
    labels = physics.labels_from(
        link, channels.astype(np.float64), scan, counts, frequency_db=grid_db[grid_index]
    )
    stored = labels.stored_columns()
    columns = {
        "scenario_id": np.arange(plan.first_id, plan.first_id + n, dtype=np.int64),
        "device_a_coordinates": _list_array(coord_offsets, a.ravel()),
        "device_b_coordinates": _list_array(coord_offsets, b.ravel()),
        "link_distance_m": distance,
        "noise_dbm": noise,
        "noise_floor_dbm": floor,
        "rssi_dbm": stored["rssi_dbm"],
        "snr_db": stored["snr_db"],
        "tx_power_dbm": tx,
        "channel_bandwidth_mhz": bandwidth,
        "channel_utilization_pct": utilization,
        "available_channels_mhz": _list_array(offsets, channels),
        "spectral_scan_dbm": _list_array(offsets, scan),
        "fresnel_clear_pct": fresnel,
        "weather_temp_c": temp,
        "weather_humidity_pct": humidity,
        "weather_condition": _strings(schema.WEATHERS, weather),
        "image_obstruction_detected": obstructed,
        "image_obstruction_type": _strings(schema.OBSTRUCTION_TYPES, obstruction),
        "environment_type": _strings(schema.ENVIRONMENTS, cols.environment_index[cell]),
        "area_density": _strings(schema.DENSITIES, cols.density_index[cell]),
        "recommended_channel_mhz": stored["recommended_channel_mhz"],
        "expected_throughput_mbps": stored["expected_throughput_mbps"],
    }
    assert tuple(columns) == schema.COLUMNS
    return pa.Table.from_arrays(
        [c if isinstance(c, pa.Array) else _arrow_array(c) for c in columns.values()],
        names=list(columns),
    )
