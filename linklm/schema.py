"""The dataset contract of DATA_SPEC.md as data: column order, categories, ranges, tables.

Everything that generates, validates or renders a link row reads its facts from here, so
the contract lives in one place.
"""

from __future__ import annotations

import polars as pl

COLUMNS: tuple[str, ...] = (
    "scenario_id",
    "device_a_coordinates",
    "device_b_coordinates",
    "link_distance_m",
    "noise_dbm",
    "noise_floor_dbm",
    "rssi_dbm",
    "snr_db",
    "tx_power_dbm",
    "channel_bandwidth_mhz",
    "channel_utilization_pct",
    "available_channels_mhz",
    "spectral_scan_dbm",
    "fresnel_clear_pct",
    "weather_temp_c",
    "weather_humidity_pct",
    "weather_condition",
    "image_obstruction_detected",
    "image_obstruction_type",
    "environment_type",
    "area_density",
    "recommended_channel_mhz",
    "expected_throughput_mbps",
)

LABEL_COLUMNS: tuple[str, ...] = ("recommended_channel_mhz", "expected_throughput_mbps")
# Computed on the recommended channel: they leak the label into any prompt or feature set.
LEAKY_COLUMNS: tuple[str, ...] = ("rssi_dbm", "snr_db")
INPUT_COLUMNS: tuple[str, ...] = tuple(
    c for c in COLUMNS if c not in LABEL_COLUMNS + LEAKY_COLUMNS and c != "scenario_id"
)

# The working (Parquet) schema. The scan map is stored as a list aligned with
# available_channels_mhz; the CSV export writes it as a JSON object channel -> dBm.
POLARS_SCHEMA: dict[str, pl.DataType] = {
    "scenario_id": pl.Int64(),
    "device_a_coordinates": pl.List(pl.Float64()),
    "device_b_coordinates": pl.List(pl.Float64()),
    "link_distance_m": pl.Float64(),
    "noise_dbm": pl.Float64(),
    "noise_floor_dbm": pl.Float64(),
    "rssi_dbm": pl.Float64(),
    "snr_db": pl.Float64(),
    "tx_power_dbm": pl.Float64(),
    "channel_bandwidth_mhz": pl.Int64(),
    "channel_utilization_pct": pl.Float64(),
    "available_channels_mhz": pl.List(pl.Int64()),
    "spectral_scan_dbm": pl.List(pl.Float64()),
    "fresnel_clear_pct": pl.Float64(),
    "weather_temp_c": pl.Float64(),
    "weather_humidity_pct": pl.Float64(),
    "weather_condition": pl.String(),
    "image_obstruction_detected": pl.Boolean(),
    "image_obstruction_type": pl.String(),
    "environment_type": pl.String(),
    "area_density": pl.String(),
    "recommended_channel_mhz": pl.Int64(),
    "expected_throughput_mbps": pl.Float64(),
}

ENVIRONMENTS: tuple[str, ...] = ("Urban", "Rural")
DENSITIES: tuple[str, ...] = ("Low", "Medium", "High")
WEATHERS: tuple[str, ...] = ("Clear", "Cloudy", "Rain", "Fog", "Snow", "Storm")
BANDWIDTHS: tuple[int, ...] = (20, 40, 80, 160)
OBSTRUCTION_TYPES: tuple[str, ...] = ("None", "Tree", "Building", "Vehicle", "Crane", "Billboard")

CHANNEL_GRID_MHZ: tuple[int, ...] = tuple(range(4900, 6101, 5))  # 241 channels
MIN_CHANNELS, MAX_CHANNELS = 10, 50

CATEGORIES: dict[str, tuple] = {
    "environment_type": ENVIRONMENTS,
    "area_density": DENSITIES,
    "weather_condition": WEATHERS,
    "channel_bandwidth_mhz": BANDWIDTHS,
    "image_obstruction_type": OBSTRUCTION_TYPES,
    "image_obstruction_detected": (False, True),
}
STRATIFY_COLUMNS: tuple[str, ...] = (
    "environment_type",
    "area_density",
    "image_obstruction_detected",
    "weather_condition",
    "channel_bandwidth_mhz",
)

# Global ranges of the columns table (inclusive).
LAT_RANGE = (33.0, 36.0)
LON_RANGE = (35.0, 37.0)
ELEVATION_RANGE = (5.0, 900.0)
B_OFFSET_DEG = 0.15
TX_POWER_RANGE = (10.0, 30.0)
TEMP_RANGE = (-5.0, 42.0)
HUMIDITY_RANGE = (20.0, 95.0)
NOISE_ABOVE_FLOOR = (0.0, 8.0)
SCAN_FLOOR_OFFSET_DB = 2.0
# the loudest reading above noise_floor_dbm that the default model's prompt can show (0.1 dB
# steps, linklm.model.numtok.LEVEL_MAX); the generator's readings stay below it
SCAN_READABLE_OFFSET_DB = 25.5

# Per (environment, density) draw tables.
FRESNEL_RANGE: dict[tuple[str, str], tuple[float, float]] = {
    ("Urban", "Low"): (60, 100),
    ("Urban", "Medium"): (40, 90),
    ("Urban", "High"): (15, 80),
    ("Rural", "Low"): (85, 100),
    ("Rural", "Medium"): (65, 100),
    ("Rural", "High"): (45, 100),
}
OBSTRUCTION_PROBABILITY: dict[tuple[str, str], float] = {
    ("Urban", "Low"): 0.35,
    ("Urban", "Medium"): 0.35,
    ("Urban", "High"): 0.65,
    ("Rural", "Low"): 0.10,
    ("Rural", "Medium"): 0.20,
    ("Rural", "High"): 0.20,
}
NOISE_FLOOR_RANGE: dict[tuple[str, str], tuple[float, float]] = {
    ("Urban", "Low"): (-105, -92),
    ("Urban", "Medium"): (-100, -88),
    ("Urban", "High"): (-95, -82),
    ("Rural", "Low"): (-115, -102),
    ("Rural", "Medium"): (-110, -98),
    ("Rural", "High"): (-108, -96),
}
UTILIZATION_RANGE: dict[tuple[str, str], tuple[float, float]] = {
    ("Urban", "Low"): (20, 60),
    ("Urban", "Medium"): (40, 80),
    ("Urban", "High"): (60, 98),
    ("Rural", "Low"): (0, 20),
    ("Rural", "Medium"): (10, 40),
    ("Rural", "High"): (20, 55),
}
ENV_DENSITY: tuple[tuple[str, str], ...] = tuple(FRESNEL_RANGE)

# Physics tables.
WEATHER_LOSS_DB_PER_KM: dict[str, float] = {
    "Clear": 0.0,
    "Cloudy": 0.2,
    "Fog": 0.6,
    "Rain": 0.8,
    "Snow": 0.9,
    "Storm": 1.5,
}
DENSITY_LOSS_DB_PER_KM: dict[tuple[str, str], float] = {
    ("Urban", "Low"): 0.5,
    ("Urban", "Medium"): 1.5,
    ("Urban", "High"): 3.0,
    ("Rural", "Low"): 0.1,
    ("Rural", "Medium"): 0.4,
    ("Rural", "High"): 0.8,
}
OBSTRUCTION_LOSS_DB: dict[str, float] = {
    "None": 0.0,
    "Tree": 3.0,
    "Vehicle": 2.0,
    "Billboard": 4.0,
    "Building": 8.0,
    "Crane": 5.0,
}
EARTH_RADIUS_M = 6_371_000.0
ANTENNA_GAINS_DB = 15.0 + 15.0

# Stored precision (decimals). Labels are computed from the stored, rounded inputs, so the
# oracle re-derives every label exactly from what a file holds.
DECIMALS: dict[str, int] = {
    "latlon": 6,
    "elevation": 1,
    "link_distance_m": 1,
    "noise_dbm": 1,
    "noise_floor_dbm": 1,
    "tx_power_dbm": 1,
    "channel_utilization_pct": 1,
    "spectral_scan_dbm": 1,
    "fresnel_clear_pct": 1,
    "weather_temp_c": 1,
    "weather_humidity_pct": 1,
    "rssi_dbm": 2,
    "snr_db": 2,
    "expected_throughput_mbps": 3,
}
