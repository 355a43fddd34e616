"""The seed-compatible CSV and its ZIP: column order, encoding, hashes, streaming, skip."""

import csv
import json
import shutil
import zipfile

import polars as pl
import pytest

from linklm import atomic, schema
from linklm.data import dataset, export


@pytest.fixture
def exported(small_dataset, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(small_dataset, copy)
    return copy, export.export_csv_zip(copy)


def test_csv_has_the_23_columns_in_order_and_json_cells(exported):
    out, record = exported
    path = out / record["csv"]["file"]
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == schema.COLUMNS
        first = next(reader)
    channels = json.loads(first["available_channels_mhz"])
    scan = json.loads(first["spectral_scan_dbm"])
    assert list(scan) == [str(c) for c in channels]
    assert len(json.loads(first["device_a_coordinates"])) == 3
    assert first["image_obstruction_detected"] in ("True", "False")
    assert record["rows"] == 3000


def test_csv_values_equal_the_parquet_rows(exported, small_dataset):
    out, record = exported
    text = pl.read_csv(out / record["csv"]["file"], infer_schema=False)
    parquet = dataset.scan(small_dataset).collect()
    assert text["scenario_id"].cast(pl.Int64).to_list() == parquet["scenario_id"].to_list()
    row = text.row(17, named=True)
    original = parquet.row(17, named=True)
    assert json.loads(row["available_channels_mhz"]) == original["available_channels_mhz"]
    assert list(json.loads(row["spectral_scan_dbm"]).values()) == original["spectral_scan_dbm"]
    assert float(row["expected_throughput_mbps"]) == original["expected_throughput_mbps"]


def test_zip_holds_the_same_bytes_and_hashes_are_recorded(exported):
    out, record = exported
    csv_path, zip_path = out / record["csv"]["file"], out / record["zip"]["file"]
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.namelist() == ["links.csv"]
        assert zf.read("links.csv") == csv_path.read_bytes()
    assert atomic.sha256_file(csv_path) == record["csv"]["sha256"]
    assert atomic.sha256_file(zip_path) == record["zip"]["sha256"]


def test_export_is_deterministic_and_skipped_when_current(exported, tmp_path, small_dataset):
    out, record = exported
    again = export.export_csv_zip(out)
    assert again["skipped"] is True
    other = tmp_path / "other"
    shutil.copytree(small_dataset, other)
    fresh = export.export_csv_zip(other)
    assert fresh["zip"]["sha256"] == record["zip"]["sha256"]
    (out / record["zip"]["file"]).write_bytes(b"broken")
    rebuilt = export.export_csv_zip(out)
    assert rebuilt["skipped"] is False and rebuilt["zip"]["sha256"] == record["zip"]["sha256"]
