"""Chunk files, the manifest, verify, tamper detection, resume and the folder lock."""

import json
import shutil

import polars as pl
import pytest

from linklm import atomic
from linklm.config import GenerationConfig
from linklm.data import dataset, simulate
from linklm.errors import DatasetError

CONFIG = GenerationConfig(n_rows=2500, chunk_size=1000, seed=7)


@pytest.fixture
def built(tmp_path):
    out = tmp_path / "data"
    dataset.build(out, CONFIG)
    return out


def test_manifest_records_every_chunk(built):
    manifest = dataset.read_manifest(built)
    assert manifest["rows"] == 2500
    assert [c["rows"] for c in manifest["chunks"]] == [1000, 1000, 500]
    assert [c["first_id"] for c in manifest["chunks"]] == [0, 1000, 2000]
    for chunk in manifest["chunks"]:
        path = built / chunk["file"]
        assert atomic.sha256_file(path) == chunk["sha256"]
        assert path.stat().st_size == chunk["bytes"]
    assert manifest["generation"] == CONFIG.model_dump(mode="json")
    assert manifest["linklm_version"]
    assert dataset.verify(built) == []
    assert dataset.scan(built).select(pl.len()).collect().item() == 2500


def test_bytes_do_not_depend_on_workers(tmp_path):
    one = dataset.build(tmp_path / "one", CONFIG, workers=1)
    three = dataset.build(tmp_path / "three", CONFIG, workers=3)
    assert one["dataset_sha256"] == three["dataset_sha256"]
    assert one == three


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated"),
        (
            lambda p: p.write_bytes(
                p.read_bytes()[:500] + bytes([p.read_bytes()[500] ^ 1]) + p.read_bytes()[501:]
            ),
            "tampered",
        ),
        (lambda p: p.unlink(), "missing"),
    ],
    ids=["truncated", "flipped-byte", "deleted"],
)
def test_verify_names_the_bad_chunk_and_rerun_repairs_it(built, damage, expected):
    good = dataset.read_manifest(built)
    damage(built / "chunks" / "chunk-00001.parquet")
    problems = dataset.verify(built)
    assert [p.file for p in problems] == ["chunks/chunk-00001.parquet"]
    assert expected in problems[0].problem
    with pytest.raises(DatasetError, match="chunk-00001.parquet"):
        dataset.require_intact(built)
    repaired = dataset.build(built, CONFIG)
    assert repaired == good
    assert dataset.verify(built) == []


def test_rerun_skips_verified_chunks(built):
    before = {p: p.stat().st_mtime_ns for p in (built / "chunks").glob("*.parquet")}
    records = [dataset.ensure_chunk(built, CONFIG, plan) for plan in simulate.plan_chunks(CONFIG)]
    assert [status for _, status in records] == ["verified"] * 3
    assert before == {p: p.stat().st_mtime_ns for p in (built / "chunks").glob("*.parquet")}


def test_edited_or_missing_manifest_is_named(built):
    manifest = json.loads((built / "manifest.json").read_text())
    manifest["rows"] = 9999
    (built / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="manifest.json: edited"):
        dataset.verify(built)
    (built / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        dataset.verify(built)
    (built / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="no manifest"):
        dataset.verify(built)


def test_folder_of_another_config_is_refused_not_overwritten(built):
    good = dataset.read_manifest(built)
    other = CONFIG.model_copy(update={"n_rows": 3000})
    with pytest.raises(DatasetError, match="n_rows 2500 -> 3000"):
        dataset.build(built, other)
    assert dataset.read_manifest(built) == good
    replaced = dataset.build(built, other, overwrite=True)
    assert replaced["rows"] == 3000


def test_folder_of_another_generator_version_is_refused_not_mixed(built):
    """A folder from another generator version (version 1 did not record one) is not resumed:
    its chunks would verify against their own records and mix two generators' draws."""
    assert dataset.read_manifest(built)["generator"] == dataset.GENERATOR
    generation = json.loads((built / "generation.json").read_text())
    assert generation == CONFIG.model_dump(mode="json") | {"generator": dataset.GENERATOR}
    del generation["generator"]
    (built / "generation.json").write_text(json.dumps(generation))
    (built / "chunks" / "chunk-00002.parquet").unlink()
    with pytest.raises(DatasetError, match="generator None -> 'linklm-chunks/"):
        dataset.build(built, CONFIG)
    assert not (built / "chunks" / "chunk-00002.parquet").exists()
    rebuilt = dataset.build(built, CONFIG, overwrite=True)
    assert rebuilt == dataset.build(built.parent / "fresh", CONFIG)


def test_chunks_without_their_generation_record_are_not_reused_for_another_config(built):
    """generation.json is written before any chunk: chunks without it were made with an
    unknown config, and verifying them against their own records would pass one seed's rows
    off as another's."""
    (built / "generation.json").unlink()
    other = CONFIG.model_copy(update={"seed": CONFIG.seed + 1})
    good = dataset.read_manifest(built)
    with pytest.raises(DatasetError, match="no readable generation.json.*--overwrite"):
        dataset.build(built, other)
    assert dataset.read_manifest(built) == good
    rebuilt = dataset.build(built, other, overwrite=True)
    assert rebuilt == dataset.build(built.parent / "fresh", other)


def test_second_writer_is_refused(built):
    held = dataset.lock(built)
    try:
        with pytest.raises(DatasetError, match="another run is writing"):
            dataset.build(built, CONFIG)
    finally:
        held.release()


def test_stale_temp_files_are_swept(built):
    stray = built / "chunks" / f".chunk-00000.parquet{atomic.TMP_MARK}123-abc"
    stray.write_bytes(b"half a chunk")
    stray_dir = built / f".shards{atomic.TMP_MARK}123-abc"
    stray_dir.mkdir()
    (stray_dir / "train-00000-of-00001.jsonl").write_text("{}")
    assert set(atomic.stray_temp_files(built)) == {stray, stray_dir}
    dataset.build(built, CONFIG)
    assert atomic.stray_temp_files(built) == []


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("good")
    with pytest.raises(RuntimeError), atomic.atomic_open(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "good"
    assert atomic.stray_temp_files(tmp_path) == []


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "shards"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_dir(target) as build:
        (build / "a").write_text("new")
        raise RuntimeError("crash")
    assert (target / "a").read_text() == "old"
    with atomic.atomic_dir(target) as build:
        (build / "b").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    shutil.rmtree(target)


def test_a_dataset_is_built_only_in_a_new_empty_or_started_folder(tmp_path):
    dataset.check_buildable(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    dataset.check_buildable(tmp_path / "empty")
    started = tmp_path / "started"  # an interrupted data run: resumed, not refused
    started.mkdir()
    (started / dataset.GENERATION).write_text("{}")
    (started / "notes.txt").write_text("mine")
    dataset.check_buildable(started)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="other: a folder with other files in it"):
        dataset.check_buildable(other)
    with pytest.raises(DatasetError, match="notes.txt: a file, not a dataset folder"):
        dataset.check_buildable(other / "notes.txt")
