"""A full disk, a read-only folder, an output path that is a file: one line naming the path
and the cause, before the work where it can be known, and the earlier output kept.

The disks are real: small tmpfs mounts (CI runs as root, as the machines here do; a
developer without the right to mount skips these). Before, each of these was 130 to 220
lines of tracebacks; training's full disk read ``unexpected pos 6637248 vs 6637136``; a
read-only output folder was found only after every row had been answered.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import cli_error
from transformers import TrainerCallback

from flows import data as data_cli
from flows import evaluate as evaluate_cli
from flows import predict as predict_cli
from flows import train as train_cli
from linklm.config import TrainConfig
from linklm.errors import StorageError
from linklm.model import training


@pytest.fixture
def mount(tmp_path):
    """mount(size, read_only=False) -> a fresh tmpfs folder of that size."""
    mounted: list[Path] = []

    def make(size: str, name: str = "disk") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
        )
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


@pytest.fixture(scope="module")
def tiny(small_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("disk-runs")
    config = TrainConfig(data_dir=small_dataset, out_dir=out, run_name="t", max_steps=2)
    return Path(training.train(config.model_copy(update={"eval_rows": 0}))["run_dir"])


def test_predict_into_a_read_only_folder_is_refused_before_answering(
    mount, tiny, small_dataset, capsys
):
    disk = mount("1m")
    answers = disk / "answers.csv"
    answers.write_text("scenario_id,recommended_channel_mhz\n1,5180\n")  # an earlier output
    _read_only(disk)
    argv = ["--model", str(tiny), "--input", str(small_dataset), "--output", str(answers)]
    code, line = cli_error(predict_cli.main, argv, capsys)
    assert code == 2 and f"{disk}: cannot write there (read-only file system)" in line
    assert answers.read_text() == "scenario_id,recommended_channel_mhz\n1,5180\n"


def test_data_is_refused_where_its_rows_would_not_fit(mount, capsys):
    disk = mount("1m")
    argv = ["--out-dir", str(disk / "data"), "--n-rows", "20000"]
    code, line = cli_error(data_cli.main, argv, capsys)
    assert code == 2 and "free on its disk, and 20,000 rows needs about 45.8 MB" in line
    assert list(disk.iterdir()) == []


def test_an_output_folder_that_is_a_file_is_named(small_dataset, tiny, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    for main, argv in (
        (data_cli.main, ["--out-dir", str(a_file), "--n-rows", "100"]),
        (data_cli.main, ["--out-dir", str(a_file / "data"), "--n-rows", "100"]),
        (train_cli.main, ["--data-dir", str(small_dataset), "--out-dir", str(a_file)]),
        (
            evaluate_cli.main,
            ["--model", str(tiny), "--data-dir", str(small_dataset), "--out-dir", str(a_file)],
        ),
    ):
        code, line = cli_error(main, argv, capsys)
        assert code == 2 and "a file, not a folder" in line and str(a_file) in line, line
    assert a_file.read_text() == "keep me"


class _FillTheDisk(TrainerCallback):
    """Leaves the run's disk with 64 KB free after the first step, as another program
    writing to the same disk would."""

    def __init__(self, disk: Path):
        self.disk = disk

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            free = shutil.disk_usage(self.disk).free
            with open(self.disk / "other-program.bin", "wb") as fh:
                fh.write(b"\0" * max(free - 64 * 1024, 0))


def test_training_on_a_disk_that_fills_names_the_disk_and_resumes(mount, small_dataset):
    disk = mount("64m")
    config = TrainConfig(
        data_dir=small_dataset,
        out_dir=disk,
        run_name="r",
        max_steps=4,
        save_steps=2,
        eval_rows=0,
        batch_size=8,
        max_rows=64,
    )
    with pytest.raises(StorageError) as raised:
        training.train(config, callbacks=[_FillTheDisk(disk)])
    message = str(raised.value)
    assert message.startswith(f"{disk / 'r'}: the disk filled while writing a checkpoint (")
    assert "bytes free" in message and "run again with --resume" in message
    assert "\n" not in message
    (disk / "other-program.bin").unlink()  # space freed: the resume finishes the run
    summary = training.train(config.model_copy(update={"resume": True}))
    assert summary["steps"] == 4
