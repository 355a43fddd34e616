"""Artifact storage: copies to any fsspec location, complete with an index, or not at all."""

import fsspec
import pytest

from linklm import store


def _folder(tmp_path):
    src = tmp_path / "run"
    (src / "model").mkdir(parents=True)
    (src / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (src / "model" / "weights.bin").write_bytes(b"\0" * 1000)
    (src / "run.json").write_text("{}")
    (src / "checkpoints" / "checkpoint-2" / "state.bin").write_bytes(b"x")
    (src / ".lock").write_text("")
    (src / ".run.json.tmp-1-abc").write_text("half")
    return src


def test_location_comes_from_config_then_environment(monkeypatch):
    monkeypatch.delenv(store.ENV_VAR, raising=False)
    assert store.artifacts_url() is None
    monkeypatch.setenv(store.ENV_VAR, "gs://bucket/linklm")
    assert store.artifacts_url() == "gs://bucket/linklm"
    assert store.artifacts_url("/mnt/drive") == "/mnt/drive"
    assert store.artifacts_url(store.NO_COPY) is None  # a subflow's explicit "no copy"
    assert store.join("s3://b/x/", "demo", "run-1") == "s3://b/x/demo/run-1"


def test_publish_to_memory_filesystem_skips_checkpoints_locks_and_temp_files(tmp_path):
    src = _folder(tmp_path)
    index = store.publish_folder(src, "memory://linklm/demo/run-1")
    assert [f["path"] for f in index["files"]] == ["model/weights.bin", "run.json"]
    fs = fsspec.filesystem("memory")
    assert fs.cat_file("/linklm/demo/run-1/model/weights.bin") == b"\0" * 1000
    assert not fs.exists("/linklm/demo/run-1/checkpoints")
    assert store.read_index("memory://linklm/demo/run-1")["bytes"] == 1002


def test_publish_to_file_url_and_a_plain_folder(tmp_path):
    src = _folder(tmp_path)
    dest = tmp_path / "drive" / "linklm"
    store.publish_folder(src, dest.as_uri() + "/demo/a")
    store.publish_folder(src, str(dest / "demo" / "b"))
    for name in ("a", "b"):
        assert (dest / "demo" / name / "run.json").read_text() == "{}"
        assert (dest / "demo" / name / store.INDEX_FILE).exists()
    store.publish_file(src / "run.json", str(dest / "registry" / "registry.json"))
    assert (dest / "registry" / "registry.json").exists()
    assert store.link(str(dest)).startswith("file://")


def test_unknown_location_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(store.StorageError, match="no such folder"):
        store.publish_folder(tmp_path / "nope", "memory://x")
    with pytest.raises(store.StorageError, match="cannot open"):
        store.publish_folder(_folder(tmp_path), "nosuchprotocol://bucket/x")
    with pytest.raises(store.StorageError, match="nothing published"):
        store.read_index("memory://never/published")
