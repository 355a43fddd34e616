"""Generation speed: the vectorised chunk generator against a plain per-row Python one.

    python benchmarks/bench_generate.py                 # 100k and 1M rows
    python benchmarks/bench_generate.py --sizes 100000  # one size

Each size runs in a fresh subprocess so its peak RSS is its own. The vectorised path is
the one the data flow runs (generate -> Parquet chunk -> SHA256 -> manifest, 2 threads),
without Prefect's start-up. The reference draws the same spec row by row with ``random``
and ``math`` and writes the same Parquet; it runs on a sample and its rate is per row.

Both also report their CPU seconds (user + system, all threads): on a machine shared with
other work the wall-clock rates depend on how much CPU the run got, rows per CPU second
much less so.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from linklm import schema
from linklm.config import GenerationConfig
from linklm.data import dataset


def reference_row(rng: random.Random, scenario_id: int) -> dict:
    """One row of DATA_SPEC.md, the obvious way: loops, dicts and math per row."""
    env, dens = rng.choice(schema.ENVIRONMENTS), rng.choice(schema.DENSITIES)
    weather, bw = rng.choice(schema.WEATHERS), rng.choice(schema.BANDWIDTHS)
    obstructed = rng.random() < schema.OBSTRUCTION_PROBABILITY[(env, dens)]
    obstruction = rng.choice(schema.OBSTRUCTION_TYPES) if obstructed else "None"
    lat, lon = rng.uniform(*schema.LAT_RANGE), rng.uniform(*schema.LON_RANGE)
    a = [round(lat, 6), round(lon, 6), round(rng.uniform(*schema.ELEVATION_RANGE), 1)]
    b = [
        round(lat + rng.uniform(-0.15, 0.15), 6),
        round(lon + rng.uniform(-0.15, 0.15), 6),
        round(rng.uniform(*schema.ELEVATION_RANGE), 1),
    ]
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    h = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(b[1] - a[1]) / 2) ** 2
    )
    distance = round(2 * schema.EARTH_RADIUS_M * math.asin(math.sqrt(h)), 1)
    floor = round(rng.uniform(*schema.NOISE_FLOOR_RANGE[(env, dens)]), 1)
    noise = round(floor + rng.uniform(0, 8), 1)
    tx = round(rng.uniform(*schema.TX_POWER_RANGE), 1)
    util = round(rng.uniform(*schema.UTILIZATION_RANGE[(env, dens)]), 1)
    fresnel = round(rng.uniform(*schema.FRESNEL_RANGE[(env, dens)]), 1)
    channels = sorted(rng.sample(schema.CHANNEL_GRID_MHZ, rng.randint(10, 50)))
    scan = {c: round(floor + 2 + max(0.0, rng.gauss(util / 100 * 8, 1.5)), 1) for c in channels}
    fres = (
        0
        if fresnel >= 90
        else 1
        if fresnel >= 70
        else 3
        if fresnel >= 50
        else 6
        if fresnel >= 30
        else 10
    )
    loss = (
        schema.WEATHER_LOSS_DB_PER_KM[weather] * distance / 1000
        + schema.DENSITY_LOSS_DB_PER_KM[(env, dens)] * distance / 1000
        + fres
        + schema.OBSTRUCTION_LOSS_DB[obstruction]
    )
    best, best_score, best_rssi = None, -math.inf, 0.0
    for c in channels:
        fspl = 32.45 + 20 * math.log10(max(distance, 1) / 1000) + 20 * math.log10(c)
        rssi = tx + 30 - fspl - loss
        score = rssi - scan[c] - 0.25 * (scan[c] - floor)
        if score > best_score:
            best, best_score, best_rssi = c, score, rssi
    snr = best_rssi - scan[best]
    tput = bw * 10 / (1 + math.exp(-(min(max(snr, -10), 60) - 25) / 4))
    return {
        "scenario_id": scenario_id,
        "device_a_coordinates": a,
        "device_b_coordinates": b,
        "link_distance_m": distance,
        "noise_dbm": noise,
        "noise_floor_dbm": floor,
        "rssi_dbm": round(best_rssi, 2),
        "snr_db": round(snr, 2),
        "tx_power_dbm": tx,
        "channel_bandwidth_mhz": bw,
        "channel_utilization_pct": util,
        "available_channels_mhz": channels,
        "spectral_scan_dbm": [scan[c] for c in channels],
        "fresnel_clear_pct": fresnel,
        "weather_temp_c": round(rng.uniform(*schema.TEMP_RANGE), 1),
        "weather_humidity_pct": round(rng.uniform(*schema.HUMIDITY_RANGE), 1),
        "weather_condition": weather,
        "image_obstruction_detected": obstructed,
        "image_obstruction_type": obstruction,
        "environment_type": env,
        "area_density": dens,
        "recommended_channel_mhz": best,
        "expected_throughput_mbps": round(tput, 3),
    }


def run_reference(n_rows: int, out: Path) -> dict:
    start = time.perf_counter()
    rng = random.Random(0)
    rows = [reference_row(rng, i) for i in range(n_rows)]
    pl.DataFrame(rows, schema=schema.POLARS_SCHEMA).write_parquet(out / "reference.parquet")
    seconds = time.perf_counter() - start
    return {"rows": n_rows, "seconds": seconds, "bytes": (out / "reference.parquet").stat().st_size}


def run_vectorised(n_rows: int, chunk_size: int, out: Path) -> dict:
    start = time.perf_counter()
    manifest = dataset.build(out, GenerationConfig(n_rows=n_rows, chunk_size=chunk_size), workers=2)
    seconds = time.perf_counter() - start
    return {"rows": manifest["rows"], "seconds": seconds, "bytes": manifest["bytes"]}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(kind: str, n_rows: int, chunk_size: int) -> None:
    out = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        cpu = _cpu_seconds()
        result = (
            run_reference(n_rows, out)
            if kind == "reference"
            else run_vectorised(n_rows, chunk_size, out)
        )
        result["cpu_seconds"] = _cpu_seconds() - cpu
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _measure(kind: str, n_rows: int, chunk_size: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--sizes",
        str(n_rows),
        "--chunk-size",
        str(chunk_size),
    ]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(runs: list[dict]) -> dict:
    """The run with the median wall time (its other figures come with it)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--chunk-size", type=int, default=20_000)
    parser.add_argument("--reference-rows", type=int, default=20_000)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="rounds of every measurement, interleaved so drift in the machine's speed hits "
        "the reference and the vectorised path alike; the median round is reported",
    )
    parser.add_argument("--child", choices=["reference", "vectorised"])
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        _child(args.child, sizes[0], args.chunk_size)
        return
    refs, runs = [], {n: [] for n in sizes}
    for _ in range(args.repeats):
        refs.append(_measure("reference", args.reference_rows, args.chunk_size))
        for n in sizes:
            runs[n].append(_measure("vectorised", n, args.chunk_size))
    ref = _median(refs)
    ref_rate = ref["rows"] / ref["seconds"]
    ref_cpu_rate = ref["rows"] / ref["cpu_seconds"]
    ref_rates = sorted(r["rows"] / r["seconds"] for r in refs)
    print(
        f"reference (per-row Python, {ref['rows']} rows, median of {len(refs)}): "
        f"{ref_rate:,.0f} rows/s (runs {ref_rates[0]:,.0f}-{ref_rates[-1]:,.0f}), "
        f"{ref['bytes'] / ref['seconds'] / 1e6:.2f} MB/s, peak RSS {ref['peak_rss_mb']:.0f} MB, "
        f"{ref_cpu_rate:,.0f} rows per CPU second"
    )
    print(
        f"{'rows':>10} {'seconds':>8} {'rows/s':>10} {'MB/s':>7} {'peak RSS MB':>12} {'x reference':>12}"
        f" {'CPU s':>7} {'rows/CPU s':>11} {'x ref (CPU)':>12} {'MB/1M rows':>11}"
    )
    for n in sizes:
        r = _median(runs[n])
        rate = r["rows"] / r["seconds"]
        cpu_rate = r["rows"] / r["cpu_seconds"]
        print(
            f"{r['rows']:>10,} {r['seconds']:>8.2f} {rate:>10,.0f} {r['bytes'] / r['seconds'] / 1e6:>7.2f} "
            f"{r['peak_rss_mb']:>12.0f} {rate / ref_rate:>12.1f} {r['cpu_seconds']:>7.1f} "
            f"{cpu_rate:>11,.0f} {cpu_rate / ref_cpu_rate:>12.1f} {r['bytes'] / r['rows']:>11.0f}"
        )
    print(
        f"(median of {args.repeats} interleaved rounds; x reference = rows/s over the reference's)"
    )


if __name__ == "__main__":
    main()
