"""The seed-compatible CSV (23 columns in order, lists and maps JSON-encoded) and its ZIP.

Both are written in one pass, chunk by chunk, so memory stays flat in the number of rows;
both land atomically and carry their SHA256 in ``export/export.json``. The ZIP member has a
fixed timestamp so the same dataset always gives the same ZIP bytes.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import polars as pl

from linklm import atomic, schema
from linklm.data import dataset
from linklm.data.prompts import joined_pairs

EXPORT_DIR = "export"
CSV_NAME = "links.csv"
ZIP_NAME = "links.csv.zip"
RECORD = "export.json"


def to_seed_csv_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Cast a working frame to the CSV's text form (JSON lists and maps, True/False)."""

    def json_list(name: str) -> pl.Expr:
        return pl.concat_str(
            [pl.lit("["), pl.col(name).cast(pl.List(pl.String)).list.join(", "), pl.lit("]")]
        ).alias(name)

    scan_map = joined_pairs(
        df, "available_channels_mhz", "spectral_scan_dbm", ": ", ", ", quote_keys=True
    )
    return df.with_columns(
        json_list("device_a_coordinates"),
        json_list("device_b_coordinates"),
        json_list("available_channels_mhz"),
        pl.concat_str([pl.lit("{"), pl.Series(scan_map), pl.lit("}")]).alias("spectral_scan_dbm"),
        pl.when(pl.col("image_obstruction_detected"))
        .then(pl.lit("True"))
        .otherwise(pl.lit("False"))
        .alias("image_obstruction_detected"),
    ).select(schema.COLUMNS)


def current_record(out_dir: Path, dataset_sha: str) -> dict | None:
    """The export record when both files exist and hash to it for this dataset, else None."""
    record = atomic.read_json_or_none(Path(out_dir) / EXPORT_DIR / RECORD)
    if not record or record.get("dataset_sha256") != dataset_sha:
        return None
    for key in ("csv", "zip"):
        path = Path(out_dir) / record[key]["file"]
        if not path.exists() or atomic.sha256_file(path) != record[key]["sha256"]:
            return None
    return record


def export_csv_zip(out_dir: Path) -> dict:
    """Write export/links.csv and export/links.csv.zip for an intact dataset; skip if current."""
    out_dir = Path(out_dir)
    manifest = dataset.require_intact(out_dir)
    previous = current_record(out_dir, manifest["dataset_sha256"])
    if previous:
        return previous | {"skipped": True}

    csv_path = out_dir / EXPORT_DIR / CSV_NAME
    zip_path = out_dir / EXPORT_DIR / ZIP_NAME
    csv_sha = hashlib.sha256()
    rows = 0
    with atomic.atomic_open(csv_path, "wb") as csv_fh, atomic.atomic_path(zip_path) as zip_tmp:
        with zipfile.ZipFile(zip_tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            info = zipfile.ZipInfo(CSV_NAME, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as member:
                for i, path in enumerate(dataset.chunk_paths(out_dir, manifest)):
                    frame = to_seed_csv_frame(pl.read_parquet(path))
                    data = frame.write_csv(include_header=i == 0).encode()
                    csv_fh.write(data)
                    member.write(data)
                    csv_sha.update(data)
                    rows += frame.height
        csv_fh.flush()
    record = {
        "dataset_sha256": manifest["dataset_sha256"],
        "rows": rows,
        "csv": {
            "file": f"{EXPORT_DIR}/{CSV_NAME}",
            "bytes": csv_path.stat().st_size,
            "sha256": csv_sha.hexdigest(),
        },
        "zip": {
            "file": f"{EXPORT_DIR}/{ZIP_NAME}",
            "bytes": zip_path.stat().st_size,
            "sha256": atomic.sha256_file(zip_path),
        },
    }
    atomic.write_json(out_dir / EXPORT_DIR / RECORD, record)
    return record | {"skipped": False}
