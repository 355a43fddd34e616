"""Test settings: every run gets its own Prefect home and Hugging Face cache, offline."""

import logging
import os
import tempfile
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="linklm-tests-"))
os.environ["PREFECT_HOME"] = str(_ROOT / "prefect")
os.environ["HF_HOME"] = str(_ROOT / "hf")
os.environ["HF_DATASETS_CACHE"] = str(_ROOT / "hf" / "datasets")
os.environ["LINKLM_HOME"] = str(_ROOT / "linklm-home")

import pytest  # noqa: E402
import torch  # noqa: E402

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # One torch thread per pytest worker, and in the subprocesses it starts: two workers
    # with two threads each on two cores made a 30 s training test take 132 s (spin-waits).
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

import tasks  # noqa: E402,F401  (the project's Prefect and hub defaults)
from linklm.config import GenerationConfig  # noqa: E402
from linklm.data import dataset  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (it takes seconds to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
        # The harness logs "Stopping temporary server" at INFO when it exits, through a
        # console handler that still holds a pytest capture stream closed by then: that
        # printed a "--- Logging error ---" traceback after the last test. Only that line
        # is lost; warnings and errors still show.
        logging.getLogger("prefect").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """A 3,000-row dataset in 3 chunks, built without Prefect. Tests must not modify it."""
    out = tmp_path_factory.mktemp("small") / "data"
    dataset.build(out, GenerationConfig(n_rows=3000, chunk_size=1000, seed=7))
    return out


def flip_last_byte(path: Path) -> None:
    """One bit of the last tensor's last value: the file stays whole and loads."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
