"""The rules of DATA_SPEC.md as polars expressions, and the problems a batch of rows has.

Each rule is a ``Check``: a column, a name, an expression that is True where a row passes,
and a message. ``check_frame`` applies every rule to a typed batch, then re-derives the
labels with the physics on the rows whose inputs passed, so one bad input is reported once
(as itself), not again as a wrong label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from linklm import schema
from linklm.data import physics, reader

TOL = 0.051  # stored inputs are rounded to 0.1; allow that rounding in range checks
LABEL_TOL = {
    "expected_throughput_mbps": (0.01, 1e-4),
    "rssi_dbm": (0.011, 0.0),
    "snr_db": (0.011, 0.0),
}


def _between(name: str, lo: float, hi: float, tol: float = 0.0) -> pl.Expr:
    return pl.col(name).is_between(lo - tol, hi + tol)


def _env_table(table: dict[tuple[str, str], tuple[float, float]], idx: int) -> pl.Expr:
    key = pl.concat_str(["environment_type", "area_density"], separator="/")
    mapping = {f"{e}/{d}": float(v[idx]) for (e, d), v in table.items()}
    return key.replace_strict(mapping, default=None, return_dtype=pl.Float64)


@dataclass(frozen=True)
class Check:
    column: str
    check: str
    ok: pl.Expr
    message: str
    severity: str = "error"


def _generator_table_check(name: str, table: dict[tuple[str, str], tuple[float, float]]) -> Check:
    """A warning: legal, but outside the generator's range for the row's environment/density."""
    inside = pl.col(name).is_between(_env_table(table, 0) - TOL, _env_table(table, 1) + TOL)
    return Check(
        name,
        "table",
        inside,
        "outside the generator's range for its environment/density",
        "warning",
    )


def _coordinate_checks(name: str) -> list[Check]:
    """Shape and elevation of either device; lat/lon ranges only for device A (B is checked
    as an offset from A)."""
    c = pl.col(name)
    checks = [
        Check(name, "shape", c.list.len() == 3, "must be [lat, lon, elevation_m]"),
        Check(
            name,
            "range",
            c.list.get(2, null_on_oob=True).is_between(*schema.ELEVATION_RANGE),
            f"elevation outside {schema.ELEVATION_RANGE} m",
        ),
    ]
    if name == "device_a_coordinates":
        for index, label, bounds in (
            (0, "latitude", schema.LAT_RANGE),
            (1, "longitude", schema.LON_RANGE),
        ):
            inside = c.list.get(index, null_on_oob=True).is_between(*bounds)
            checks.append(Check(name, "range", inside, f"{label} outside {bounds}"))
    return checks


def row_checks() -> list[Check]:
    """Every per-row rule of the contract, as polars expressions (True = row passes)."""
    a, b = pl.col("device_a_coordinates"), pl.col("device_b_coordinates")
    chans = pl.col("available_channels_mhz")
    off = schema.B_OFFSET_DEG + 1e-6
    grid = list(schema.CHANNEL_GRID_MHZ)
    checks = [
        Check("scenario_id", "range", pl.col("scenario_id") >= 0, "negative; ids are 0 or more"),
        *_coordinate_checks("device_a_coordinates"),
        *_coordinate_checks("device_b_coordinates"),
        Check(
            "device_b_coordinates",
            "range",
            ((b.list.get(0, null_on_oob=True) - a.list.get(0, null_on_oob=True)).abs() <= off)
            & ((b.list.get(1, null_on_oob=True) - a.list.get(1, null_on_oob=True)).abs() <= off),
            f"more than {schema.B_OFFSET_DEG} degrees from device A",
        ),
        Check("link_distance_m", "range", pl.col("link_distance_m") >= 0, "negative distance"),
        Check(
            "noise_floor_dbm",
            "range",
            _between("noise_floor_dbm", -115, -82, TOL),
            "outside -115..-82 dBm",
        ),
        _generator_table_check("noise_floor_dbm", schema.NOISE_FLOOR_RANGE),
        Check(
            "noise_dbm",
            "range",
            (pl.col("noise_dbm") - pl.col("noise_floor_dbm")).is_between(-TOL, 8 + TOL),
            "must be noise_floor_dbm + 0..8 dB",
        ),
        Check(
            "tx_power_dbm",
            "range",
            _between("tx_power_dbm", *schema.TX_POWER_RANGE, TOL),
            f"outside {schema.TX_POWER_RANGE} dBm",
        ),
        Check(
            "channel_bandwidth_mhz",
            "category",
            pl.col("channel_bandwidth_mhz").is_in(schema.BANDWIDTHS),
            f"not one of {list(schema.BANDWIDTHS)}",
        ),
        Check(
            "channel_utilization_pct",
            "range",
            _between("channel_utilization_pct", 0, 100),
            "outside 0..100 %",
        ),
        _generator_table_check("channel_utilization_pct", schema.UTILIZATION_RANGE),
        Check(
            "fresnel_clear_pct", "range", _between("fresnel_clear_pct", 0, 100), "outside 0..100 %"
        ),
        _generator_table_check("fresnel_clear_pct", schema.FRESNEL_RANGE),
        Check(
            "weather_temp_c",
            "range",
            _between("weather_temp_c", *schema.TEMP_RANGE, TOL),
            f"outside {schema.TEMP_RANGE} C",
        ),
        Check(
            "weather_humidity_pct",
            "range",
            _between("weather_humidity_pct", *schema.HUMIDITY_RANGE, TOL),
            f"outside {schema.HUMIDITY_RANGE} %",
        ),
        Check(
            "available_channels_mhz",
            "count",
            chans.list.len().is_between(schema.MIN_CHANNELS, schema.MAX_CHANNELS),
            f"must list {schema.MIN_CHANNELS}..{schema.MAX_CHANNELS} channels",
        ),
        Check(
            "available_channels_mhz",
            "grid",
            chans.list.eval(pl.element().is_in(grid)).list.all(),
            "a channel is not on the 4900, 4905, ..., 6100 MHz grid",
        ),
        Check(
            "available_channels_mhz",
            "order",
            chans.list.eval(pl.element().diff().drop_nulls() > 0).list.all(),
            "channels must be distinct and ascending",
        ),
        Check(
            "spectral_scan_dbm",
            "shape",
            pl.col("spectral_scan_dbm").list.len() == chans.list.len(),
            "needs one entry per available channel",
        ),
        Check(
            "spectral_scan_dbm",
            "range",
            (pl.col("spectral_scan_dbm").list.min() - pl.col("noise_floor_dbm"))
            >= schema.SCAN_FLOOR_OFFSET_DB - TOL,
            "a reading is less than noise_floor_dbm + 2 dB",
        ),
        Check(
            "spectral_scan_dbm",
            "table",
            (pl.col("spectral_scan_dbm").list.max() - pl.col("noise_floor_dbm"))
            <= schema.SCAN_READABLE_OFFSET_DB + TOL,
            f"a reading is more than {schema.SCAN_READABLE_OFFSET_DB} dB above noise_floor_dbm: beyond "
            "the generator's readings, and the default model's prompt clips it there",
            "warning",
        ),
        Check(
            "image_obstruction_type",
            "category",
            pl.col("image_obstruction_type").is_in(schema.OBSTRUCTION_TYPES),
            f"not one of {list(schema.OBSTRUCTION_TYPES)}",
        ),
        Check(
            "image_obstruction_type",
            "consistency",
            pl.col("image_obstruction_detected") | (pl.col("image_obstruction_type") == "None"),
            "must be None when no obstruction is detected",
        ),
        Check(
            "recommended_channel_mhz",
            "membership",
            chans.list.contains(pl.col("recommended_channel_mhz")),
            "not one of the row's available channels",
        ),
        Check(
            "expected_throughput_mbps",
            "range",
            (pl.col("expected_throughput_mbps") > 0)
            & (pl.col("expected_throughput_mbps") <= 10 * pl.col("channel_bandwidth_mhz")),
            "must be in (0, 10 x bandwidth]",
        ),
    ]
    for name in ("weather_condition", "environment_type", "area_density"):
        checks.append(
            Check(
                name,
                "category",
                pl.col(name).is_in(schema.CATEGORIES[name]),
                f"not one of {list(schema.CATEGORIES[name])}",
            )
        )
    return checks


def _check_problems(frame: pl.DataFrame) -> list[pl.DataFrame]:
    out = []
    for chk in row_checks():
        bad = frame.filter(~chk.ok.fill_null(True))
        if bad.height:
            out.append(
                bad.select(
                    pl.col("_row").alias("row"),
                    pl.col("scenario_id"),
                    pl.lit(chk.column).alias("column"),
                    pl.lit(chk.check).alias("check"),
                    pl.lit(chk.severity).alias("severity"),
                    pl.lit(chk.message).alias("message"),
                )
            )
    if "_scan_keys" in frame.columns:
        bad = frame.filter(
            (pl.col("_scan_keys") != pl.col("available_channels_mhz")).fill_null(False)
        )
        out.append(
            problem_rows(
                bad,
                "spectral_scan_dbm",
                "keys",
                "map keys must be exactly the available channels, in order",
            )
        )
    return out


def problem_rows(frame: pl.DataFrame, column: str, check: str, message: str) -> pl.DataFrame:
    return frame.select(
        pl.col("_row").alias("row"),
        pl.col("scenario_id"),
        pl.lit(column).alias("column"),
        pl.lit(check).alias("check"),
        pl.lit("error").alias("severity"),
        pl.lit(message).alias("message"),
    )


def _label_problems(
    frame: pl.DataFrame, severity: str = "error", agreement: list | None = None
) -> list[pl.DataFrame]:
    """Re-derive labels with the physics on rows whose inputs passed every check; with
    ``agreement``, append how well this batch's labels agree (``agreement_summary``)."""
    if frame.height == 0:
        return []
    labels = physics.oracle_labels(
        frame, labelled_channel=frame["recommended_channel_mhz"].to_numpy()
    )
    tie_ok = labels.labelled_score >= labels.best_score - 1e-9
    rows = [
        (
            "recommended_channel_mhz",
            ~tie_ok,
            labels.recommended_channel_mhz,
            "is not the channel the physics recommends",
        )
    ]
    for name, expected in (
        ("expected_throughput_mbps", labels.expected_throughput_mbps),
        ("rssi_dbm", labels.rssi_dbm),
        ("snr_db", labels.snr_db),
    ):
        abs_tol, rel_tol = LABEL_TOL[name]
        got = frame[name].to_numpy()
        bad = ~(np.abs(got - expected) <= abs_tol + rel_tol * np.abs(expected))  # NaN is bad
        rows.append((name, bad, expected, "disagrees with the physics"))
    if agreement is not None:
        any_bad = np.logical_or.reduce([bad for _, bad, _, _ in rows])
        tput_error = np.abs(frame["expected_throughput_mbps"].to_numpy() - rows[1][2])
        agreement.append(
            {
                "rows": frame.height,
                "agree": int((~any_bad).sum()),
                "channel_agree": int(tie_ok.sum()),
                "throughput_agree": int((~rows[1][1]).sum()),
                "channel_off_mhz": np.abs(
                    frame["recommended_channel_mhz"].to_numpy() - labels.recommended_channel_mhz
                )[~tie_ok],
                "throughput_off_mbps": tput_error[rows[1][1]],
            }
        )
    out = []
    for name, bad, expected, what in rows:
        if bad.any():
            sub = frame.filter(pl.Series(bad))
            exp = np.asarray(expected)[bad]
            out.append(
                sub.select(
                    pl.col("_row").alias("row"),
                    pl.col("scenario_id"),
                    pl.lit(name).alias("column"),
                    pl.lit("physics").alias("check"),
                    pl.lit(severity).alias("severity"),
                    pl.format(
                        f"{{}} {what} (expected {{}})",
                        pl.col(name),
                        pl.Series(np.round(exp, 3)).cast(pl.String),
                    ).alias("message"),
                )
            )
    return out


def share_percent(share: float) -> str:
    """``share`` as a percentage with one decimal that says 100.0% only when every row agrees
    and 0.0% only when none does: 2,997 of 2,998 is '>99.9%', not a rounded '100.0%'."""
    text = f"{share:.1%}"
    if 0 < share < 1 and text in ("0.0%", "100.0%"):
        return "<0.1%" if share < 0.5 else ">99.9%"
    return text


def agreement_summary(batches: list[dict]) -> dict:
    """How far a dataset's labels agree with the synthetic physics: the share of rows (of
    those whose inputs passed the contract) whose channel, throughput, RSSI and SNR it
    re-derives, and for the rest how far off the channel and the throughput are."""
    rows = sum(b["rows"] for b in batches)
    off_ch = np.concatenate([b["channel_off_mhz"] for b in batches] or [np.zeros(0)])
    off_tp = np.concatenate([b["throughput_off_mbps"] for b in batches] or [np.zeros(0)])

    def spread(values: np.ndarray) -> dict:
        if not values.size:
            return {"rows": 0}
        return {
            "rows": int(values.size),
            "median": float(np.median(values)),
            "p90": float(np.quantile(values, 0.9)),
            "max": float(values.max()),
        }

    def share(key: str) -> float:
        return sum(b[key] for b in batches) / rows if rows else 1.0

    return {
        "rows_checked": rows,
        "agree_share": share("agree"),
        "channel_agree_share": share("channel_agree"),
        "throughput_agree_share": share("throughput_agree"),
        "channel_off_mhz": spread(off_ch),
        "throughput_off_mbps": spread(off_tp),
    }


PhysicsMode = Literal["enforce", "report"]


def check_frame(
    frame: pl.DataFrame,
    parse_problems: pl.DataFrame | None = None,
    physics_mode: PhysicsMode = "enforce",
    agreement: list | None = None,
) -> pl.DataFrame:
    """All problems of one typed batch (with a ``_row`` column).

    ``physics_mode`` "report" makes disagreement with the synthetic physics (labels, the
    haversine distance) a warning instead of an error: measured links need not follow the
    generator's model, and their rows are kept. ``agreement`` (a list) collects this
    batch's figures for ``agreement_summary``."""
    physics_severity = "error" if physics_mode == "enforce" else "warning"
    problems = [parse_problems] if parse_problems is not None else []
    problems += _check_problems(frame)
    # distance needs well-formed coordinates
    coords_ok = (
        frame.select(
            (pl.col("device_a_coordinates").list.len() == 3)
            & (pl.col("device_b_coordinates").list.len() == 3)
        )
        .to_series()
        .fill_null(False)
    )
    sub = frame.filter(coords_ok & pl.col("link_distance_m").is_not_null())
    if sub.height:
        a = np.array(sub["device_a_coordinates"].to_list(), dtype=float)
        b = np.array(sub["device_b_coordinates"].to_list(), dtype=float)
        expected = physics.haversine_m(a, b)
        bad = np.abs(sub["link_distance_m"].to_numpy() - expected) > 1.0 + 1e-4 * expected
        if bad.any():
            problems.append(
                problem_rows(
                    sub.filter(pl.Series(bad)),
                    "link_distance_m",
                    "haversine",
                    "is not the haversine distance between A and B",
                ).with_columns(pl.lit(physics_severity).alias("severity"))
            )
    errors = (
        pl.concat([p.cast(reader.PROBLEM_SCHEMA) for p in problems])
        if problems
        else pl.DataFrame(schema=reader.PROBLEM_SCHEMA)
    )
    bad_rows = errors.filter(pl.col("severity") == "error")["row"].unique()
    clean = frame.filter(~pl.col("_row").is_in(bad_rows.implode()))
    label_problems = _label_problems(clean, physics_severity, agreement)
    if label_problems:
        errors = pl.concat([errors, *(p.cast(reader.PROBLEM_SCHEMA) for p in label_problems)])
    return errors
