"""Test settings: every run gets its own Prefect home and Hugging Face cache, offline."""

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_SCRATCH = Path(tempfile.mkdtemp(prefix="linklm-tests-"))
os.environ["PREFECT_HOME"] = str(_SCRATCH / "prefect")
os.environ["HF_HOME"] = str(_SCRATCH / "hf")
os.environ["HF_DATASETS_CACHE"] = str(_SCRATCH / "hf" / "datasets")
os.environ["LINKLM_HOME"] = str(_SCRATCH / "linklm-home")

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
def prefect_api(prefect_harness) -> dict:
    """The environment that points a CLI subprocess at the session's Prefect server. Without
    it each one starts a temporary server of its own, a user's first run (12-27 s of CPU
    measured here): tests/test_stopping.py keeps that path, where Ctrl-C must stop it too."""
    from prefect.settings import PREFECT_API_URL

    return {"PREFECT_API_URL": PREFECT_API_URL.value()}


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


ROOT = Path(__file__).resolve().parents[1]


def run_module(
    module: str,
    *args: str,
    env: dict | None = None,
    timeout: float = 300,
    cwd: Path = ROOT,
    **kwargs,
) -> subprocess.CompletedProcess:
    """``python -m module args...`` from the checkout, as a user types it: its output captured
    as text, the test's environment plus ``env``, a time limit."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def artifact_keys() -> set[str]:
    """The keys of every artifact the Prefect server holds (the session's test harness)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {a.key for a in client.read_artifacts() if a.key}


# a few hundred rows, batches of 16 and a quick learning rate: the default model moves in
# a few dozen steps, which is what a test of training needs (resume, kills, saves)
TINY_TRAINING = {"batch_size": 16, "learning_rate": 3e-3, "warmup_steps": 2, "max_rows": 800}


def tiny_train_config(data_dir: Path, out_dir: Path, **changes):
    """A 24-step run of the default model on ``data_dir``: validation at 12 and 24 steps,
    checkpoints there too, a log line every 4 steps."""
    from linklm.config import TrainConfig

    base = TINY_TRAINING | dict(
        data_dir=data_dir,
        out_dir=out_dir,
        run_name="run",
        max_steps=24,
        logging_steps=4,
        eval_steps=12,
        save_steps=12,
        eval_rows=64,
    )
    return TrainConfig(**base | changes)


def cli_error(main, argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, the one stderr line) of a CLI run in-process, as ``python -m`` runs it;
    asserts the line is one ``error:`` line."""
    from flows.cli import run_cli

    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return stopped.value.code, err[0]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server on 127.0.0.1 (moto's server mode) with one bucket; yields
    the environment that points boto, s3fs and every subprocess at it (and at no cloud)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "linklm-test",
        "AWS_SECRET_ACCESS_KEY": "linklm-test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket="linklm")
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture
def s3_store(s3_server, request) -> str:
    """A store URL of its own for one test, on the session's S3 server."""
    return f"s3://linklm/{request.node.name[:60]}-{os.getpid()}"


# Longest modules first (seconds in CI, 2 pytest workers): a module runs whole on one worker,
# and one started last finishes last. The rest keep their file order.
LONGEST_FIRST = (
    "test_deployment_e2e.py",  # 510 (measured 2026-12-07, a CI run)
    "test_gemma.py",  # ~200: 100 of them building Gemma's checkpoint from the GGUF
    "test_flow_eval.py",  # 170
    "test_interrupts.py",  # 160
    "test_train.py",  # 155
    "test_concurrency.py",  # 150
    "test_predict.py",  # 150
    "test_serve.py",  # ~120: two tiny runs, a server per test module, Chromium
    "test_import.py",  # ~100: imports, a mixed training, the evaluate CLI
    "test_stopping.py",  # 145
    "test_flow_retrain.py",  # 130
    "test_flow_data.py",  # 85
    "test_secrets.py",  # 80
    "test_ddp.py",  # 70
    "test_notebooks.py",  # 70
    "test_store.py",  # 50
    "test_bad_input.py",  # 50
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))
