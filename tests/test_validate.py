"""The validator on good data, on CSVs from other tools and on hand-made bad CSVs."""

import json

import polars as pl
import pytest

from linklm.data import dataset, validate
from linklm.data.export import to_seed_csv_frame
from linklm.errors import DatasetError, SchemaError, ValidationFailed


@pytest.fixture
def good_text(small_dataset) -> pl.DataFrame:
    chunk = dataset.chunk_paths(small_dataset)[0]
    return to_seed_csv_frame(pl.read_parquet(chunk).head(40))


def _write(df: pl.DataFrame, tmp_path, name="links.csv"):
    path = tmp_path / name
    df.write_csv(path)
    return path


def _set(df: pl.DataFrame, row: int, column: str, value: str) -> pl.DataFrame:
    return df.with_columns(
        pl.when(pl.int_range(pl.len()) == row)
        .then(pl.lit(value))
        .otherwise(pl.col(column))
        .alias(column)
    )


def test_generated_dataset_is_clean(small_dataset, tmp_path):
    result = validate.validate_path(small_dataset, tmp_path / "report")
    assert result.rows == 3000
    assert result.bad_rows == 0
    assert result.problems.filter(pl.col("severity") == "error").height == 0
    assert sum(result.distribution["environment_type"].values()) == 3000
    assert set(result.distribution["weather_condition"]) == {
        "Clear",
        "Cloudy",
        "Rain",
        "Fog",
        "Snow",
        "Storm",
    }
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert (
        report["rows"] == 3000
        and report["dataset_sha256"] == dataset.read_manifest(small_dataset)["dataset_sha256"]
    )
    assert "Distribution" in (tmp_path / "report" / "report.md").read_text()


def test_exported_csv_round_trips_clean(good_text, tmp_path):
    result = validate.validate_path(_write(good_text, tmp_path))
    assert (result.rows, result.bad_rows) == (40, 0)


def test_csv_from_another_tool_is_accepted(good_text, tmp_path):
    """Python-literal lists and int-keyed maps, lower-case booleans, shuffled column order."""
    other = good_text.with_columns(
        pl.col("spectral_scan_dbm").str.replace_all('"', ""),
        pl.col("image_obstruction_detected").str.to_lowercase(),
        pl.col("device_a_coordinates").str.replace_all(", ", ","),
    )
    other = other.select(list(reversed(other.columns)))
    result = validate.validate_path(_write(other, tmp_path))
    assert result.bad_rows == 0, result.problems


def _problems_for(df, tmp_path):
    result = validate.validate_path(_write(df, tmp_path))
    return result, result.problems.filter(pl.col("severity") == "error")


@pytest.mark.parametrize(
    "column, value, check, text",
    [
        ("expected_throughput_mbps", "NaN", "nan", "NaN"),
        ("recommended_channel_mhz", "", "missing", "missing"),
        ("tx_power_dbm", "45.0", "range", "outside"),
        ("weather_condition", "Hail", "category", "not one of"),
        ("recommended_channel_mhz", "6105", "membership", "available channels"),
        ("channel_bandwidth_mhz", "30", "category", "not one of"),
        ("available_channels_mhz", "[5180, 5180x]", "type", "not a list"),
        ("image_obstruction_detected", "maybe", "type", "not a boolean"),
        ("link_distance_m", "12", "haversine", "haversine"),
        ("device_a_coordinates", "[40.0, 35.5, 100.0]", "range", "latitude outside"),
        ("recommended_channel_mhz", "1e30", "type", "not a 64-bit whole number"),
    ],
)
def test_bad_cell_is_reported_with_row_and_id(good_text, tmp_path, column, value, check, text):
    bad = _set(good_text, 5, column, value)
    result, errors = _problems_for(bad, tmp_path)
    hit = errors.filter((pl.col("column") == column) & (pl.col("check") == check))
    assert hit.height == 1, errors
    assert hit["row"][0] == 5 and hit["scenario_id"][0] == int(good_text["scenario_id"][5])
    assert text in hit["message"][0]
    assert result.bad_rows == 1
    quarantine = pl.read_csv(result.files["quarantine_csv"], infer_schema=False)
    assert quarantine["row"].to_list() == ["5"]
    assert column in quarantine["problems"][0]


def test_label_that_is_not_the_physics_is_caught(good_text, tmp_path):
    row = good_text.row(3, named=True)
    channels = json.loads(row["available_channels_mhz"])
    wrong = next(c for c in channels if c != int(row["recommended_channel_mhz"]))
    result, errors = _problems_for(
        _set(good_text, 3, "recommended_channel_mhz", str(wrong)), tmp_path
    )
    assert errors.filter(pl.col("check") == "physics")["column"].to_list() == [
        "recommended_channel_mhz"
    ]
    result, errors = _problems_for(_set(good_text, 3, "expected_throughput_mbps", "1.5"), tmp_path)
    assert (
        "expected_throughput_mbps"
        in errors.filter(pl.col("check") == "physics")["column"].to_list()
    )


def test_duplicate_ids_are_all_reported_and_quarantined(good_text, tmp_path):
    dup = _set(good_text, 9, "scenario_id", good_text["scenario_id"][2])
    result, errors = _problems_for(dup, tmp_path)
    assert sorted(errors.filter(pl.col("check") == "duplicate")["row"].to_list()) == [2, 9]
    assert sorted(pl.read_csv(result.files["quarantine_csv"])["row"].to_list()) == [2, 9]


def test_every_row_is_kept_or_quarantined(good_text, tmp_path):
    bad = _set(_set(good_text, 1, "weather_condition", "Hail"), 7, "tx_power_dbm", "abc")
    result, errors = _problems_for(bad, tmp_path)
    quarantine = pl.read_csv(result.files["quarantine_csv"])
    assert quarantine["row"].to_list() == [1, 7]
    assert result.rows - result.bad_rows + quarantine.height == 40


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda df: df.rename({"snr_db": "snr"}),
            r"missing column\(s\) \['snr_db'\]; unexpected column\(s\) \['snr'\]",
        ),
        (
            lambda df: df.with_columns(pl.lit("x").alias("comment")),
            r"unexpected column\(s\) \['comment'\]",
        ),
        (lambda df: df.drop("weather_condition"), r"missing column\(s\) \['weather_condition'\]"),
        (lambda df: df.head(0), "header only"),
    ],
)
def test_schema_errors_name_the_columns(good_text, tmp_path, make, message):
    with pytest.raises(SchemaError, match=message):
        validate.validate_path(_write(make(good_text), tmp_path))


def test_unreadable_files_get_one_clear_error(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(SchemaError, match="empty file"):
        validate.validate_path(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"scenario_\xe9d\n1\n")  # in the header: no columns to read
    with pytest.raises(SchemaError, match=r"not UTF-8 text \(byte 9, line 1\)"):
        validate.validate_path(latin)
    with pytest.raises(SchemaError, match="file not found"):
        validate.validate_path(tmp_path / "nope.csv")


def test_threshold_fails_with_the_first_problems(good_text, tmp_path):
    result, _ = _problems_for(_set(good_text, 4, "weather_condition", "Hail"), tmp_path)
    validate.enforce(result.summary(), max_error_rate=0.05)  # 1 of 40 = 2.5 % is tolerated
    with pytest.raises(
        ValidationFailed,
        match=r"1 of 40 rows \(2.50%\).*row 4 \(scenario_id \d+\) weather_condition",
    ):
        validate.enforce(result.summary(), max_error_rate=0.0)


def test_parquet_in_the_working_schema_is_accepted(small_dataset, tmp_path):
    chunk = dataset.chunk_paths(small_dataset)[1]
    result = validate.validate_path(chunk, tmp_path / "r")
    assert (result.rows, result.bad_rows) == (1000, 0)
    bad = tmp_path / "bad.parquet"
    pl.read_parquet(chunk).with_columns(pl.col("tx_power_dbm").cast(pl.String)).with_columns(
        pl.lit("loud").alias("tx_power_dbm")
    ).write_parquet(bad)
    with pytest.raises(SchemaError, match="tx_power_dbm has type String"):
        validate.validate_path(bad)


def test_trailing_blank_lines_are_not_rows_but_a_blank_line_between_rows_is(good_text, tmp_path):
    path = _write(good_text.head(5), tmp_path)
    path.write_text(path.read_text() + "\n\n")  # an editor's trailing blank lines
    result = validate.validate_path(path, tmp_path / "r1")
    assert (result.rows, result.bad_rows) == (5, 0)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:3], "", *lines[3:]]) + "\n")
    result = validate.validate_path(path, tmp_path / "r2")
    assert (result.rows, result.bad_rows) == (6, 1)  # row 2 is the blank line, and says so
    assert set(result.problems.filter(pl.col("severity") == "error")["row"]) == {2}


def test_an_id_beyond_64_bits_or_negative_is_a_bad_row(good_text, tmp_path):
    result, errors = _problems_for(_set(good_text, 3, "scenario_id", "9" * 20), tmp_path)
    assert result.bad_rows == 1 and errors["row"].to_list() == [3]
    assert "not a 64-bit whole number" in errors["message"][0]
    result, errors = _problems_for(_set(good_text, 4, "scenario_id", "-1"), tmp_path)
    assert result.bad_rows == 1 and errors["row"].to_list() == [4]
    assert errors["check"][0] == "range" and "negative" in errors["message"][0]


def _with_value(frame: pl.DataFrame, row: int, column: str, value) -> pl.DataFrame:
    values = frame[column].to_list()
    values[row] = value
    return frame.with_columns(pl.Series(column, values, dtype=frame.schema[column]))


@pytest.mark.parametrize(
    "column, value, check",
    [
        ("weather_condition", None, "missing"),
        ("link_distance_m", float("nan"), "nan"),
        ("noise_floor_dbm", None, "missing"),
        ("rssi_dbm", float("nan"), "nan"),  # a leaky column is checked like the others
        ("snr_db", float("inf"), "nan"),
        ("expected_throughput_mbps", None, "missing"),
        ("scenario_id", None, "missing"),
        ("image_obstruction_detected", None, "missing"),
        ("spectral_scan_dbm", "first element NaN", "nan"),
        ("available_channels_mhz", "first element null", "missing"),
    ],
)
def test_a_missing_or_nan_value_in_parquet_fails_its_row_only(
    small_dataset, tmp_path, column, value, check
):
    rows = pl.read_parquet(dataset.chunk_paths(small_dataset)[0]).head(8)
    if isinstance(value, str):  # one element of the list in row 5
        listed = rows[column][5].to_list()
        listed[0] = float("nan") if "NaN" in value else None
        value = listed
    path = tmp_path / "links.parquet"
    _with_value(rows, 5, column, value).write_parquet(path)
    _only_row_5_is_bad(path, tmp_path, column, check)


def _only_row_5_is_bad(path, tmp_path, column: str, check: str) -> pl.DataFrame:
    """Row 5 alone fails, on ``column``'s ``check``, and is quarantined; the quarantine."""
    result = validate.validate_path(path, tmp_path / "report")
    errors = result.problems.filter(pl.col("severity") == "error")
    assert result.bad_rows == 1 and set(errors["row"]) == {5}, errors
    assert errors.filter((pl.col("column") == column) & (pl.col("check") == check)).height == 1
    quarantine = pl.read_csv(result.files["quarantine_csv"], infer_schema=False)
    assert quarantine["row"].to_list() == ["5"]
    return quarantine


def test_an_empty_parquet_file_is_refused(small_dataset, tmp_path):
    path = tmp_path / "empty.parquet"
    pl.read_parquet(dataset.chunk_paths(small_dataset)[0]).head(0).write_parquet(path)
    with pytest.raises(SchemaError, match="empty.parquet: no rows"):
        validate.validate_path(path, tmp_path / "report")


def test_tampered_dataset_folder_is_not_validated(small_dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    chunk = copy / "chunks" / "chunk-00002.parquet"
    chunk.write_bytes(chunk.read_bytes()[:-1] + b"\0")
    with pytest.raises(DatasetError, match="chunk-00002.parquet"):
        validate.validate_path(copy)


def test_a_reading_the_prompt_would_clip_is_a_warning(small_dataset, tmp_path):
    rows = pl.read_parquet(dataset.chunk_paths(small_dataset)[0]).head(10)
    row = rows.row(7, named=True)
    scan, channels = list(row["spectral_scan_dbm"]), row["available_channels_mhz"]
    other = next(i for i, c in enumerate(channels) if c != row["recommended_channel_mhz"])
    scan[other] = row["noise_floor_dbm"] + 30.0  # louder: the recommendation stands
    values = rows["spectral_scan_dbm"].to_list()
    values[7] = scan
    loud = rows.with_columns(pl.Series("spectral_scan_dbm", values))
    result = validate.validate_path(_write(to_seed_csv_frame(loud), tmp_path))
    assert result.bad_rows == 0
    warnings = result.problems.filter(pl.col("severity") == "warning")
    assert warnings.select("row", "column", "check").rows() == [(7, "spectral_scan_dbm", "table")]
    assert "prompt clips it" in warnings["message"][0]


def test_value_outside_the_generators_table_is_a_warning_not_an_error(good_text, tmp_path):
    row = good_text.row(6, named=True)
    env = (row["environment_type"], row["area_density"])
    from linklm import schema

    lo, hi = schema.FRESNEL_RANGE[env]
    outside = 10.0 if lo > 10 else None
    if outside is None:
        pytest.skip("row's fresnel table starts at 0")
    result = validate.validate_path(
        _write(_set(good_text, 6, "fresnel_clear_pct", str(outside)), tmp_path)
    )
    warnings = result.problems.filter(pl.col("severity") == "warning")
    assert warnings.select("row", "column", "check").rows() == [(6, "fresnel_clear_pct", "table")]


@pytest.mark.parametrize(
    "channels, scan, column, check, scan_text",
    [
        (None, lambda scan: scan[:5], "spectral_scan_dbm", "shape", ": null"),
        (lambda _: [], lambda _: [], "available_channels_mhz", "count", "{}"),
        (None, lambda _: None, "spectral_scan_dbm", "missing", ": null"),
    ],
    ids=["scan-shorter-than-channels", "both-empty", "scan-missing"],
)
def test_a_malformed_scan_in_parquet_is_a_bad_row_quarantined_as_text(
    small_dataset, tmp_path, channels, scan, column, check, scan_text
):
    rows = pl.read_parquet(dataset.chunk_paths(small_dataset)[0]).head(8)
    records = rows.to_dicts()
    if channels:
        records[5]["available_channels_mhz"] = channels(records[5]["available_channels_mhz"])
    records[5]["spectral_scan_dbm"] = scan(records[5]["spectral_scan_dbm"])
    path = tmp_path / "links.parquet"
    pl.DataFrame(records, schema=rows.schema).write_parquet(path)
    quarantine = _only_row_5_is_bad(path, tmp_path, column, check)
    assert scan_text in quarantine["spectral_scan_dbm"][0]
