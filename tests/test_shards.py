"""Deterministic splits and conversational shards loadable with Hugging Face datasets."""

import shutil

import datasets
import numpy as np
import pytest

from linklm.config import PromptConfig, SplitConfig
from linklm.data import dataset, shards


def test_split_is_a_pure_function_of_the_id():
    ids = np.arange(200_000)
    a = shards.split_of(ids, SplitConfig())
    assert (a == shards.split_of(ids, SplitConfig())).all()
    assert (a[50_000:60_000] == shards.split_of(ids[50_000:60_000], SplitConfig())).all()
    share = {s: (a == s).mean() for s in shards.SPLITS}
    assert share["train"] == pytest.approx(0.8, abs=0.005)
    assert share["validation"] == pytest.approx(0.1, abs=0.005)
    for salt in ("another", "linklm-split-v1", "linklm-split-v3"):  # a shared prefix too
        other = shards.split_of(ids, SplitConfig(salt=salt))
        assert (a != other).mean() > 0.2, salt


@pytest.fixture
def sharded(small_dataset, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(small_dataset, copy)
    record = shards.write_shards(copy, SplitConfig(), PromptConfig(), shard_rows=1000)
    return copy, record


def test_shards_cover_every_row_once(sharded):
    out, record = sharded
    ids = []
    for split in shards.SPLITS:
        rows = shards.read_split(out, split)
        assert len(rows) == record["rows"][split]
        ids += [r["scenario_id"] for r in rows]
        expected = shards.split_of(np.array([r["scenario_id"] for r in rows]), SplitConfig())
        assert set(expected) <= {split}
    assert sorted(ids) == list(range(3000))
    assert len(record["files"]) == 3 + 1 + 1  # 2,4xx train rows in files of 1,000


def test_messages_are_user_then_assistant(sharded):
    out, _ = sharded
    row = shards.read_split(out, "test")[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][1]["content"].startswith('{"recommended_channel_mhz": ')


def test_datasets_round_trip_and_streaming(sharded):
    out, record = sharded
    loaded = datasets.load_dataset(str(out / "shards"))
    assert {s: loaded[s].num_rows for s in loaded} == record["rows"]
    first = shards.read_split(out, "validation")[0]
    assert loaded["validation"][0] == first
    streamed = datasets.load_dataset(str(out / "shards"), streaming=True)
    assert next(iter(streamed["test"])) == shards.read_split(out, "test")[0]


def test_excluded_ids_are_left_out_and_rerun_is_skipped(sharded):
    out, record = sharded
    assert (
        shards.write_shards(out, SplitConfig(), PromptConfig(), shard_rows=1000)["skipped"] is True
    )
    again = shards.write_shards(
        out, SplitConfig(), PromptConfig(), shard_rows=1000, exclude_ids=[0, 1, 2]
    )
    assert again["skipped"] is False
    ids = {r["scenario_id"] for s in shards.SPLITS for r in shards.read_split(out, s)}
    assert ids.isdisjoint({0, 1, 2}) and len(ids) == 2997


def test_target_channel_only(small_dataset, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(small_dataset, copy)
    shards.write_shards(copy, SplitConfig(), PromptConfig(target="channel"))
    answer = shards.read_split(copy, "train")[0]["messages"][1]["content"]
    assert "expected_throughput_mbps" not in answer and "recommended_channel_mhz" in answer
    assert dataset.verify(copy) == []


def test_training_reads_the_split_of_the_shards_and_refuses_an_unknown_one(small_dataset, tmp_path):
    from linklm.errors import DatasetError
    from linklm.model import examples

    copy = tmp_path / "data"
    shutil.copytree(small_dataset, copy)
    halves = SplitConfig(train=0.5, val=0.25)
    shards.write_shards(copy, halves, PromptConfig())
    assert examples.split_config_of(copy) == halves
    test_ids = set(examples.split_rows(copy, "test")["scenario_id"])
    record = copy / shards.SHARD_DIR / shards.RECORD
    for damage in ("{not json", '{"key": {}}'):  # unreadable, or no split in it
        record.write_text(damage)
        with pytest.raises(DatasetError, match="shards.json: missing or not a shards record"):
            examples.split_rows(copy, "train")
    record.unlink()
    with pytest.raises(DatasetError, match="the split of this folder's shards is unknown"):
        examples.split_rows(copy, "train")  # not the default 0.8, which takes test rows
    shutil.rmtree(copy / shards.SHARD_DIR)  # no shards at all: a folder of dataset.build
    assert examples.split_config_of(copy) == SplitConfig()
    # the default split puts some of those test rows elsewhere: why the record is required
    assert test_ids - set(examples.split_rows(copy, "test")["scenario_id"])
