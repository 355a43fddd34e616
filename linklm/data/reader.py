"""Read any CSV or Parquet that claims the DATA_SPEC.md schema into the working types.

Other tools write the same contract in different dialects: JSON or Python-literal lists,
map keys quoted or not, True/true/1 for booleans, blanks or NaN for missing values. Reading
is lenient about dialect and strict about meaning: a value that cannot be parsed becomes
null in the typed frame and a problem row naming the row, the column and the raw text, so
nothing is dropped silently. Parsing is vectorised (polars string expressions).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from linklm import schema
from linklm.errors import SchemaError, first_line

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
LIST_RE = rf"^\[\s*(?:{NUM}(?:\s*,\s*{NUM})*)?\s*\]$"
KEY = r"[\"']?\d+(?:\.0*)?[\"']?"  # 5180, "5180", "5180.0" (a float key, as pandas writes)
MAP_RE = rf"^\{{\s*(?:{KEY}\s*:\s*{NUM}(?:\s*,\s*{KEY}\s*:\s*{NUM})*)?\s*\}}$"
TRUE_WORDS = ("true", "1", "yes", "y", "t")
FALSE_WORDS = ("false", "0", "no", "n", "f")
MISSING_WORDS = ("", "null", "none", "na", "n/a")
# The longest real cell, a 50-channel scan map, is under 2 kB. A bigger one is reported (row,
# column, size) and not parsed, so one runaway cell cannot stall the regexes or fill memory
# with copies of itself.
MAX_CELL_BYTES = 65_536

PROBLEM_SCHEMA = {
    "row": pl.Int64,
    "scenario_id": pl.Int64,
    "column": pl.String,
    "check": pl.String,
    "severity": pl.String,
    "message": pl.String,
}


DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def delimiter_hint(columns: list[str]) -> str:
    """'' unless a CSV's header read as one column holds another delimiter (a semicolon, as
    spreadsheets in many locales write): then what to do about it, for the error message."""
    if len(columns) != 1:
        return ""
    found = [name for sep, name in DELIMITERS.items() if sep in columns[0]]
    if not found:
        return ""
    return (
        f" (its header is one column split by {found[0]}s: the file is {found[0]}-delimited, "
        "and DATA_SPEC.md's CSV is comma-delimited; save it with commas)"
    )


def check_columns(columns: list[str], source: str) -> None:
    """Missing or extra columns are a schema error for the whole file; order is not."""
    missing = [c for c in schema.COLUMNS if c not in columns]
    extra = [c for c in columns if c not in schema.COLUMNS]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if missing or extra or duplicated:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(f"unexpected column(s) {extra}")
        if duplicated:
            parts.append(f"duplicated column(s) {duplicated}")
        raise SchemaError(
            f"{source}: {'; '.join(parts)}; DATA_SPEC.md has exactly {len(schema.COLUMNS)} "
            f"columns{delimiter_hint(columns)}"
        )


def without_trailing_blank_lines(frame: pl.DataFrame) -> pl.DataFrame:
    """The CSV's rows without the empty ones at its end: polars reads a trailing blank line
    (an editor's habit) as a row of nulls, which would count as a bad row. A blank line
    between rows stays a row, so every row keeps its number."""
    blank = frame.select(pl.all_horizontal(pl.all().is_null())).to_series()
    filled = (~blank).arg_true()
    return frame.head(int(filled[-1]) + 1 if filled.len() else 0)


def read_csv_text(path: Path) -> pl.DataFrame:
    """Every cell as text, header checked; a clear error for empty or non-UTF-8 files."""
    if not path.exists():
        raise SchemaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise SchemaError(f"{path}: empty file (no header, no rows)")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        # A bad byte in the header, or NUL bytes, make it no CSV at all (UTF-16, a zip);
        # one in a row (a Latin-1 "é" typed into a survey) is that row's problem alone.
        if line == 1 or b"\x00" in raw:
            raise SchemaError(
                f"{path}: not UTF-8 text (byte {exc.start}, line {line}); re-save it as UTF-8"
            ) from None
    try:
        frame = pl.read_csv(raw, infer_schema=False, encoding="utf8-lossy")
        frame = without_trailing_blank_lines(frame)
    except pl.exceptions.PolarsError as exc:
        header = raw.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
        hint = delimiter_hint([header]) if "," not in header else ""
        raise SchemaError(f"{path}: not a readable CSV ({first_line(exc)}){hint}") from None
    check_columns(frame.columns, str(path))
    if frame.height == 0:
        raise SchemaError(f"{path}: header only, no rows")
    return frame.select(schema.COLUMNS)


def _problems(
    frame: pl.DataFrame, bad: pl.Expr, column: str, check: str, message: pl.Expr
) -> pl.DataFrame:
    return frame.filter(bad).select(
        pl.col("_row").alias("row"),
        pl.col("_id").alias("scenario_id"),
        pl.lit(column).alias("column"),
        pl.lit(check).alias("check"),
        pl.lit("error").alias("severity"),
        message.alias("message"),
    )


def _shown(name: str) -> pl.Expr:
    return pl.concat_str(
        [pl.lit("got "), pl.col(name).str.slice(0, 60).map_elements(repr, return_dtype=pl.String)]
    )


def _oversized(text: pl.DataFrame, row_offset: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(text with oversized cells blanked, one 'size' problem per such cell)."""
    too_big = {c: pl.col(c).str.len_bytes() > MAX_CELL_BYTES for c in text.columns}
    flags = text.select(
        pl.any_horizontal(list(too_big.values())).fill_null(False).alias("any"),
        *(v.fill_null(False).alias(c) for c, v in too_big.items()),
    )
    if not flags["any"].any():
        return text, pl.DataFrame(schema=PROBLEM_SCHEMA)
    big = [c for c in text.columns if flags[c].any()]
    sizes = text.select(  # sizes only: a filter over the text itself would copy the big cells
        (pl.int_range(pl.len()) + row_offset).alias("_row"),
        pl.col("scenario_id").str.strip_chars().cast(pl.Int64, strict=False).alias("_id"),
        *(pl.col(c).str.len_bytes().alias(c) for c in big),
    )
    found = [
        _problems(
            sizes,
            (pl.col(c) > MAX_CELL_BYTES).fill_null(False),
            c,
            "size",
            pl.format(
                "cell of {} bytes, over the {} a value can need; not parsed",
                pl.col(c),
                pl.lit(f"{MAX_CELL_BYTES:,}"),
            ),
        )
        for c in big
    ]
    blanked = text.with_columns(
        pl.when(too_big[c]).then(None).otherwise(pl.col(c)).alias(c) for c in big
    )
    return blanked, pl.concat([p.cast(PROBLEM_SCHEMA) for p in found])


NOT_UTF8 = "\ufffd"  # what a lossy read puts where a byte was not UTF-8


def _not_utf8(text: pl.DataFrame, row_offset: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(text with cells holding non-UTF-8 bytes blanked, one 'encoding' problem per such
    cell): the row is quarantined, the rest of the file is read."""
    bad = {c: pl.col(c).str.contains(NOT_UTF8, literal=True).fill_null(False) for c in text.columns}
    flags = text.select(**bad)
    columns = [c for c in text.columns if flags[c].any()]
    if not columns:
        return text, pl.DataFrame(schema=PROBLEM_SCHEMA)
    numbered = text.with_columns(
        (pl.int_range(pl.len()) + row_offset).alias("_row"),
        pl.col("scenario_id").str.strip_chars().cast(pl.Int64, strict=False).alias("_id"),
    )
    found = [
        _problems(
            numbered,
            bad[c],
            c,
            "encoding",
            pl.concat_str(
                [
                    pl.lit("bytes that are not UTF-8 (Latin-1?), "),
                    _shown(c),
                    pl.lit("; re-save the file as UTF-8"),
                ]
            ),
        )
        for c in columns
    ]
    blanked = text.with_columns(
        pl.when(bad[c]).then(None).otherwise(pl.col(c)).alias(c) for c in columns
    )
    return blanked, pl.concat([p.cast(PROBLEM_SCHEMA) for p in found])


def parse_text_frame(text: pl.DataFrame, row_offset: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(typed frame, parse problems) from a frame of text cells in schema order."""
    text, size_problems = _oversized(text, row_offset)
    text, encoding_problems = _not_utf8(text, row_offset)
    size_problems = pl.concat([size_problems, encoding_problems])
    frame = text.with_columns(pl.all().str.strip_chars()).with_columns(
        (pl.int_range(pl.len()) + row_offset).alias("_row"),
        pl.col("scenario_id").cast(pl.Int64, strict=False).alias("_id"),
    )
    exprs: list[pl.Expr] = []
    problems: list[pl.DataFrame] = []
    for name, dtype in schema.POLARS_SCHEMA.items():
        col = pl.col(name)
        # "None" is a category of image_obstruction_type, so text columns only miss when blank
        missing_words = ("",) if dtype == pl.String() else MISSING_WORDS
        missing = col.is_null() | col.str.to_lowercase().is_in(missing_words)
        problems.append(_problems(frame, missing, name, "missing", pl.lit("value is missing")))
        if dtype == pl.String():
            exprs.append(pl.when(missing).then(None).otherwise(col).alias(name))
            continue
        if dtype == pl.Boolean():
            low = col.str.to_lowercase()
            parsed = (
                pl.when(low.is_in(TRUE_WORDS)).then(True).when(low.is_in(FALSE_WORDS)).then(False)
            )
            unparsed = ~missing & parsed.is_null()
            problems.append(
                _problems(
                    frame,
                    unparsed,
                    name,
                    "type",
                    pl.concat_str([pl.lit("not a boolean, "), _shown(name)]),
                )
            )
            exprs.append(parsed.alias(name))
            continue
        if isinstance(dtype, pl.List):
            if name == "spectral_scan_dbm":
                ok = col.str.contains(MAP_RE)
                numbers = col.str.extract_all(NUM).list.eval(pl.element().cast(pl.Float64))
                parsed = numbers.list.gather_every(2, offset=1)
                keys = numbers.list.gather_every(2).cast(pl.List(pl.Int64))
                exprs.append(keys.alias("_scan_keys"))
                what = "not a map of channel: dBm"
            else:
                ok = col.str.contains(LIST_RE)
                parsed = col.str.extract_all(NUM).list.eval(pl.element().cast(pl.Float64))
                what = "not a list of numbers"
                if dtype.inner == pl.Int64():  # 4900.5 is no channel: never cut to 4900
                    whole = parsed.list.eval((pl.element() == pl.element().floor()).all())
                    whole = whole.list.first().fill_null(True)
                    fraction = ~missing & ok.fill_null(False) & ~whole
                    problems.append(
                        _problems(
                            frame,
                            fraction,
                            name,
                            "type",
                            pl.concat_str([pl.lit("not a list of whole numbers, "), _shown(name)]),
                        )
                    )
                    parsed = pl.when(whole).then(parsed.cast(pl.List(pl.Int64), strict=False))
            bad = ~missing & ~ok.fill_null(False)
            problems.append(
                _problems(
                    frame, bad, name, "type", pl.concat_str([pl.lit(what + ", "), _shown(name)])
                )
            )
            exprs.append(pl.when(ok).then(parsed).otherwise(None).alias(name))
            continue
        number = col.cast(pl.Float64, strict=False)
        unparsed = ~missing & number.is_null()
        problems.append(
            _problems(
                frame,
                unparsed,
                name,
                "type",
                pl.concat_str([pl.lit("not a number, "), _shown(name)]),
            )
        )
        nan = number.is_nan() | number.is_infinite()
        problems.append(
            _problems(frame, nan.fill_null(False), name, "nan", pl.lit("NaN or infinite"))
        )
        clean = pl.when(nan.fill_null(False)).then(None).otherwise(number)
        if dtype == pl.Int64():
            # beyond 64 bits a number has no whole-number form here (and the cast would fail)
            fractional = clean.is_not_null() & (
                (clean != clean.round(0)) | (clean.abs() >= 2.0**63)
            )
            problems.append(
                _problems(
                    frame,
                    fractional,
                    name,
                    "type",
                    pl.concat_str([pl.lit("not a 64-bit whole number, "), _shown(name)]),
                )
            )
            clean = pl.when(fractional).then(None).otherwise(clean).cast(pl.Int64)
        exprs.append(clean.alias(name))
    typed = frame.select(pl.col("_row"), *exprs)
    found = pl.concat([p.cast(PROBLEM_SCHEMA) for p in problems])
    if size_problems.height:  # a blanked cell is too big or not UTF-8, not missing
        found = found.join(size_problems, on=["row", "column"], how="anti")
        found = pl.concat([found, size_problems])
    return typed, found


def typed_value_problems(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(frame with NaN and infinities as nulls, a problem per missing or NaN value) for a
    typed frame with ``_row`` (a Parquet file): what the CSV reader finds while parsing
    text, so the rules and the physics only ever see rows whose values are all there."""
    frame = frame.with_columns(pl.col("scenario_id").alias("_id"))
    problems, exprs = [], []
    for name, dtype in schema.POLARS_SCHEMA.items():
        col = pl.col(name)
        is_list = isinstance(dtype, pl.List)
        missing = col.is_null()
        if is_list:
            missing = missing | col.list.eval(pl.element().is_null()).list.any().fill_null(False)
        problems.append(_problems(frame, missing, name, "missing", pl.lit("value is missing")))
        floats = (dtype.inner if is_list else dtype) == pl.Float64()
        if not floats:
            continue
        if is_list:
            element = pl.element()
            nan = col.list.eval(element.is_nan() | element.is_infinite()).list.any()
        else:
            nan = col.is_nan() | col.is_infinite()
        nan = nan.fill_null(False)
        problems.append(_problems(frame, nan, name, "nan", pl.lit("NaN or infinite")))
        exprs.append(pl.when(nan).then(None).otherwise(col).alias(name))
    found = pl.concat([p.cast(PROBLEM_SCHEMA) for p in problems])
    return frame.drop("_id").with_columns(exprs), found


def typed_from_parquet(path: Path) -> pl.DataFrame:
    """A Parquet file in the working schema (column order may differ)."""
    if not path.exists():
        raise SchemaError(f"{path}: file not found")
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None
    check_columns(frame.columns, str(path))
    if frame.height == 0:
        raise SchemaError(f"{path}: no rows")
    for name, dtype in schema.POLARS_SCHEMA.items():
        source = frame.schema[name]
        if source == dtype:
            continue
        wrong = f"{path}: column {name} has type {source}, expected {dtype}"
        try:
            cast = frame[name].cast(dtype, strict=True)
        except pl.exceptions.PolarsError:
            raise SchemaError(wrong) from None
        if source != pl.String:  # a cast that rounds (5180.7 -> 5180, 2 -> true) is refused
            lossy = cast.cast(source, strict=False).ne_missing(frame[name]).arg_true()
            if lossy.len():
                row = int(lossy[0])
                raise SchemaError(
                    f"{wrong}; row {row} holds {frame[name][row]!r}, which would change "
                    "in conversion"
                )
        frame = frame.with_columns(cast.alias(name))
    return frame.select(schema.COLUMNS)


def _cell_text(value) -> str | None:
    """A JSON value as the CSV dialect's text: lists and maps as JSON, booleans as words."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def read_jsonl(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(text cells in schema order, one problem per line that is no JSON object or has a
    field outside the contract) for a JSON Lines file: one link per line, as
    ``flows.predict`` writes and reads them. A broken line is that row's problem (its cells
    stay blank), never the whole file's; blank lines are skipped."""
    if not path.exists():
        raise SchemaError(f"{path}: file not found")
    cells: dict[str, list] = {c: [] for c in schema.COLUMNS}
    problems: list[dict] = []
    seen_columns = False
    with open(path, "rb") as fh:
        lines = [(n, line) for n, line in enumerate(fh, start=1) if line.strip()]
    if not lines:
        raise SchemaError(f"{path}: empty file (no rows)")
    for row, (number, line) in enumerate(lines):
        text = line.decode("utf-8", errors="replace")
        try:
            record = json.loads(text)
        except ValueError as exc:
            record, why = None, f"line {number}: not JSON ({exc})"
        else:
            why = None if isinstance(record, dict) else f"line {number}: not a JSON object"
        if record is None or why:
            record = {}
            problems.append(
                {"row": row, "scenario_id": None, "column": "", "check": "json", "message": why}
            )
        seen_columns |= any(c in record for c in schema.COLUMNS)
        ident = record.get("scenario_id")
        for key in record:
            if key not in cells:
                problems.append(
                    {
                        "row": row,
                        "scenario_id": ident if isinstance(ident, int) else None,
                        "column": str(key)[:60],
                        "check": "column",
                        "message": "not a DATA_SPEC.md column",
                    }
                )
        for name, column in cells.items():
            column.append(_cell_text(record.get(name)))
    if not seen_columns:
        raise SchemaError(
            f"{path}: no line has any DATA_SPEC.md column (e.g. scenario_id); is it JSON Lines "
            "of links?"
        )
    text = pl.DataFrame(cells, schema=dict.fromkeys(schema.COLUMNS, pl.String))
    return text, pl.DataFrame(problems, schema=PROBLEM_SCHEMA).with_columns(
        pl.lit("error").alias("severity")
    )


def parse_jsonl(path: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(typed frame with ``_row``, problems, text cells) of a JSON Lines file; a line that
    is not a JSON object has that one problem, not one per blank cell."""
    text, line_problems = read_jsonl(path)
    typed, problems = parse_text_frame(text)
    broken = line_problems.filter(pl.col("check") == "json")["row"]
    problems = problems.filter(~pl.col("row").is_in(broken.implode()))
    return typed, pl.concat([line_problems.select(PROBLEM_SCHEMA.keys()), problems]), text
