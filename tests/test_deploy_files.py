"""The deployment files as written: prefect.yaml (entrypoints, pools, the retrain schedule),
the pull step, the GPU worker Dockerfile (not built here: no Docker) and the notebooks."""

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from pydantic import BaseModel

from deployments import pools, steps

SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}


def test_every_flow_is_deployed_to_a_pool_named_by_what_it_needs():
    assert set(DEPLOYMENTS) == {
        "data",
        "train",
        "evaluate",
        "learning-curve",
        "sweep",
        "trial",
        "demo",
        "retrain",
        "predict",
    }
    pool_of = {name: d["work_pool"]["name"] for name, d in DEPLOYMENTS.items()}
    assert {p.name for p in pools.POOLS} == set(pool_of.values())
    assert pool_of["data"] == pool_of["demo"] == pool_of["predict"] == pools.CPU.name
    gpu = ("train", "evaluate", "sweep", "trial", "retrain")
    assert {pool_of[n] for n in gpu} == {pools.GPU.name}


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_entrypoint_is_a_flow_whose_parameters_are_a_typed_form_with_defaults(name):
    flow = load_flow_from_entrypoint(DEPLOYMENTS[name]["entrypoint"])
    schema = parameter_schema(flow).model_dump_for_openapi()
    (param,) = schema["properties"].values()
    assert param["default"], f"{name}: the UI form needs defaults"
    ref = param["$ref"].rsplit("/", 1)[-1]
    assert schema["definitions"][ref]["properties"]  # one field per config setting
    (default,) = (p.default for p in inspect.signature(flow.fn).parameters.values())
    hints = typing.get_type_hints(flow.fn)
    hints.pop("return", None)
    (annotation,) = hints.values()
    assert issubclass(annotation, BaseModel) and isinstance(default, annotation)


def test_retrain_schedule_is_a_valid_weekly_cron_and_off_by_default():
    retrain = DEPLOYMENTS["retrain"]
    (schedule,) = retrain["schedules"]
    assert schedule["active"] is False
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert cron.cron == "0 3 * * 1" and cron.timezone == "UTC"
    assert retrain["concurrency_limit"] == 1  # two retrainings at once would race
    assert not any("schedules" in d for n, d in DEPLOYMENTS.items() if n != "retrain")


def test_pull_step_uses_the_worker_checkout(tmp_path, monkeypatch):
    (step,) = SPEC["pull"]
    assert list(step) == ["deployments.steps.checkout"]
    assert set(step["deployments.steps.checkout"]) == {"repository", "branch", "directory"}
    monkeypatch.chdir(tmp_path)
    assert steps.checkout(directory=str(ROOT)) == {"directory": str(ROOT.resolve())}
    assert Path.cwd() == ROOT.resolve()
    monkeypatch.chdir(tmp_path)
    assert steps.checkout() == {"directory": str(ROOT.resolve())}  # "" = unset env var
    with pytest.raises(steps.CheckoutError, match="LINKLM_PROJECT_DIR"):
        steps.checkout(directory=str(tmp_path))


def test_a_git_tracking_worker_keeps_its_clone_and_what_runs_write(tmp_path, monkeypatch):
    """A process worker starts each run in a temporary folder it deletes: the clone (and the
    runs/ a flow writes into it) must live elsewhere, and survive an update and a re-clone."""
    branch = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--abbrev-ref", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    branch = "" if branch == "HEAD" else branch  # a detached checkout: the default branch
    monkeypatch.setenv("LINKLM_HOME", str(tmp_path / "home"))
    run_folder = tmp_path / "tmpXYZprefect"  # what the worker gives a flow run
    run_folder.mkdir()
    monkeypatch.chdir(run_folder)
    found = steps.checkout(repository=ROOT.as_uri(), branch=branch)
    clone = Path(found["directory"])
    assert clone.parent == tmp_path / "home" / "checkouts" and Path.cwd() == clone
    assert (clone / "prefect.yaml").is_file() and not list(run_folder.iterdir())
    (clone / "runs" / "data").mkdir(parents=True)
    (clone / "runs" / "data" / "manifest.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(run_folder)  # the worker's clean-up
    # the next run updates the same clone; a failed update makes Prefect clone afresh
    assert steps.checkout(repository=ROOT.as_uri(), branch=branch) == found
    assert (clone / "runs" / "data" / "manifest.json").read_text() == "{}"
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(clone)
    assert steps.checkout(repository=ROOT.as_uri(), branch=branch) == found
    assert (clone / "runs" / "data" / "manifest.json").read_text() == "{}"


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_a_non_root_cuda_gpu_worker_with_a_healthcheck():
    instructions = _dockerfile()
    words = [w for w, _ in instructions]
    base = next(a for w, a in instructions if w == "FROM")
    # torch 2.13.0 from PyPI brings CUDA 13.0 itself: no CUDA runtime image of another
    # version beside it, and the driver it needs is required of the host
    assert base == "ubuntu:24.04"
    runs = " ".join(a for w, a in instructions if w == "RUN")
    assert '"torch==2.13.0"' in runs and '".[gpu,s3]"' in runs
    assert re.search(r"torch==(\d+\.\d+\.\d+)", runs).group(1) == _pyproject_torch()
    users = [a for w, a in instructions if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for w, a in instructions if w == "ENV")))
    assert env["NVIDIA_REQUIRE_CUDA"] == "cuda>=13.0" and env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert "driver >= 580" in next(a for w, a in instructions if w == "LABEL")
    # a GPU worker may load hub models: the project's offline default is lifted there
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        assert env[flag] == "0", flag
    health = next(a for w, a in instructions if w == "HEALTHCHECK")
    assert "/health" in health and "CMD" in health
    entry = json.loads(next(a for w, a in instructions if w == "ENTRYPOINT"))
    cmd = json.loads(next(a for w, a in instructions if w == "CMD"))
    command = entry + cmd
    assert command[:4] == ["python", "-m", "deployments", "worker"]
    assert pools.GPU.name in command and "--healthcheck" in command
    assert (ROOT / ".dockerignore").read_text().count(".venv") == 1
    # the same image runs the prediction service, documented in its header, with its health
    text = (ROOT / "Dockerfile").read_text()
    assert "-m flows.serve --model champion --host 0.0.0.0" in text
    assert "LINKLM_HEALTH_URL" in health and "8000" in next(
        a for w, a in instructions if w == "EXPOSE"
    )


def _pyproject_torch() -> str:
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if d.startswith("torch==")).split("==")[1]


def test_colab_keeps_its_own_torch_and_installs_the_rest():
    """Colab ships a torch built for its driver; installing PyPI's 2.13.0 (CUDA 13.0, driver
    >= 580) over it was a large download that may not run there. The notebook's install
    keeps it: every other requirement of the gpu extra, then the project without deps."""
    nb = json.loads((ROOT / "notebooks" / "colab_worker.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "install_keeping_torch.py gpu" in code and "pip install -q -e" not in code
    done = subprocess.run(
        [sys.executable, "scripts/install_keeping_torch.py", "gpu", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    first, second = done.stdout.strip().splitlines()[-2:]
    assert "torch" not in first.replace("install_keeping_torch", "").split("install -q", 1)[1]
    assert "bitsandbytes" in first and "transformers" in first and "peft" in first
    assert second.endswith(f"install -q --no-deps -e {ROOT}")


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SECRET_LIKE = re.compile(
    r"hf_[A-Za-z0-9]{20,}|pnu_[A-Za-z0-9]{20,}|gh[po]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}"
    r"|(?i:(token|api_key|secret|password)\s*=\s*[\"'][^\"']{12,}[\"'])"
)


def _code(cell: dict) -> str:
    """A code cell as Python: shell (!) and magic (%) lines become pass."""
    lines = "".join(cell["source"]).splitlines()
    return "\n".join(
        re.sub(r"^(\s*)[!%].*$", r"\1pass", line) if line.lstrip()[:1] in "!%" else line
        for line in lines
    )


def test_notebooks_exist_and_are_stripped():
    assert {p.name for p in NOTEBOOKS} >= {"colab_worker.ipynb", "demo.ipynb"}
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        assert nb["nbformat"] == 4
        assert "widgets" not in nb["metadata"], f"{path.name}: widget state in the metadata"
        for cell in nb["cells"]:
            assert "widgets" not in cell.get("metadata", {}), path.name
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [], f"{path.name}: outputs committed; run nbstripout"
                assert cell["execution_count"] is None, f"{path.name}: execution counts"
                compile(_code(cell), path.name, "exec")
            assert not SECRET_LIKE.search("".join(cell["source"])), f"{path.name}: a secret?"


def test_colab_worker_reads_secrets_without_printing_them():
    nb = json.loads((ROOT / "notebooks" / "colab_worker.ipynb").read_text())
    code = "\n".join(_code(c) for c in nb["cells"] if c["cell_type"] == "code")
    assert "userdata.get(name)" in code and "drive.mount" in code
    assert "torch.cuda.is_available()" in code and "deployments worker" in "".join(
        "".join(c["source"]) for c in nb["cells"]
    )
    for line in code.splitlines():
        if "print(" in line:
            assert "value" not in line and "userdata" not in line, line
    # HF_TOKEN is collected for hub models: the project's offline default must be lifted
    lifted = 'for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):'
    assert f'{lifted}\n    os.environ[name] = "0"' in code


def test_demo_notebook_config_cell_makes_a_valid_demo_config():
    from linklm.config import DemoConfig, TrainSettings

    nb = json.loads((ROOT / "notebooks" / "demo.ipynb").read_text())
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    settings: dict = {}
    exec(_code(cells[0]), settings)  # the top config cell
    config = DemoConfig(
        n_rows=settings["N_ROWS"],
        train=TrainSettings(
            mode=settings["MODE"], epochs=settings["EPOCHS"], batch_size=settings["BATCH_SIZE"]
        ),
        out_dir=settings["OUT_DIR"],
    )
    assert config.train.epochs and config.n_rows > 0
    assert sum("demo_flow(" in "".join(c["source"]) for c in cells) == 1


def test_deployments_cli_takes_the_api_url_after_the_command_and_names_a_non_api(tmp_path):
    """`up --api-url URL` as the README writes it; a URL that answers but not as Prefect's
    API (a missing /api, a plain web server) is one line, not a traceback."""
    import http.server
    import threading

    from deployments.__main__ import _parser

    for argv in (["up", "--api-url", "http://a/api"], ["--api-url", "http://a/api", "up"]):
        assert _parser().parse_args(argv).api_url == "http://a/api"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    env = dict(
        os.environ,
        PREFECT_HOME=str(tmp_path / "home"),
        PREFECT_CLIENT_MAX_RETRIES="0",
        NO_PROXY="127.0.0.1,localhost",
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "deployments", "pools", "--api-url", url],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.shutdown()
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {url}: answered HTTP ") and "does the URL end in /api" in line


def test_deployments_cli_reads_the_api_url_from_the_prefect_profile(tmp_path):
    """`prefect config set PREFECT_API_URL=...` (what the server's banner says to run) is
    enough: the CLI uses the profile's URL instead of refusing for want of one."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {
        "PREFECT_HOME": str(tmp_path / "home"),
        "PREFECT_CLIENT_MAX_RETRIES": "0",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    prefect = [sys.executable, "-m", "prefect"]
    subprocess.run(
        [*prefect, "config", "set", "PREFECT_API_URL=http://127.0.0.1:9/api"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    done = subprocess.run(
        [sys.executable, "-m", "deployments", "pools"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2  # port 9: nothing answers, but it was asked
    assert done.stderr.startswith("error: http://127.0.0.1:9/api: no Prefect API answers"), (
        done.stderr
    )


def test_prefect_toml_is_what_every_prefect_command_in_the_checkout_reads():
    """`prefect server start` run in the checkout reads prefect.toml (no telemetry, the long
    start-up timeout) without importing the project; the values are the ones importing
    `tasks` sets for flows started elsewhere."""
    import tasks

    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    shown = subprocess.run(
        [sys.executable, "-m", "prefect", "config", "view", "--show-sources"],
        cwd=ROOT,
        env=env | {"PREFECT_HOME": str(ROOT / ".pytest_cache" / "prefect-home")},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    from_toml = dict(re.findall(r"^(PREFECT_\w+)='([^']*)' \(from prefect.toml\)$", shown, re.M))
    prefect_defaults = {
        k: v for k, v in tasks.PROJECT_ENV_DEFAULTS.items() if k.startswith("PREFECT_")
    }
    assert set(from_toml) == set(prefect_defaults), shown
    for name, value in prefect_defaults.items():
        assert from_toml[name].lower() == value.lower(), name
