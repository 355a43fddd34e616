"""End to end, the way users run it: a real Prefect server, the work pools, the deployments
of prefect.yaml, real process workers. The demo is submitted from the Prefect UI's run form
in headless Chromium; then workers that share nothing but the API and an S3 store (moto's
server) retrain, serve the champion, survive a killed worker, and fan a sweep out.

Everything runs on 127.0.0.1 with its own PREFECT_HOME; every process started here is
stopped by its process group at the end, whatever happened. Each wait has a deadline and
fails with the tail of the process's log instead of hanging.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import fsspec
import polars as pl
import psutil
import pytest
from conftest import ROOT, run_module
from playwright.sync_api import sync_playwright
from prefect import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from linklm import store
from linklm.config import GenerationConfig
from linklm.data import dataset, export
from linklm.serving import registry

SERVER_START_S = 120
DEPLOY_S = 300
RUN_S = 480
DEPLOYMENTS = {
    *("data", "train", "evaluate", "learning-curve", "sweep", "trial", "demo", "retrain", "predict")
}
CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Processes started by this module, each in its own session, stopped by group id."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: dict[str, subprocess.Popen] = {}
        self.logs: list = []

    def start(
        self, name: str, cmd: list[str], env: dict[str, str], cwd: Path = ROOT
    ) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop_all)
        self.logs.append(log)
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started[name] = proc
        return proc

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill_tree(self, name: str) -> None:
        """SIGKILL a process and everything it started, at once: a machine that vanishes."""
        root = psutil.Process(self.started[name].pid)
        tree = [root, *root.children(recursive=True)]
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(tree, timeout=10)

    def stop_all(self) -> None:
        """SIGTERM each group, again after 10 s (a worker needs two), then SIGKILL."""
        for proc in reversed(list(self.started.values())):
            for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                if proc.poll() is not None:
                    break
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait_s)
                except subprocess.TimeoutExpired:
                    continue
        for log in self.logs:
            log.close()


def wait_http_ok(url: str, procs: Processes, name: str, timeout_s: float) -> float:
    """Seconds until ``url`` answers 200; fails if process ``name`` exits or time runs out."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if procs.started[name].poll() is not None:
            pytest.fail(f"{name} exited early:\n{procs.tail(name)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{name}: {url} not answering after {timeout_s} s:\n{procs.tail(name)}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-e2e")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ) | {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "LINKLM_HOME": str(home / "linklm-home"),
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # a worker asks for new runs every 2 s, not 10
    }
    for name in ("PREFECT_API_KEY", store.ENV_VAR, "LINKLM_PROJECT_DIR"):
        env.pop(name, None)
    procs = Processes(home)
    try:
        procs.start(
            "server",
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
            + ["--port", str(port)],
            env,
        )
        seconds = wait_http_ok(f"{url}/health", procs, "server", SERVER_START_S)
        print(f"\nprefect server healthy after {seconds:.1f} s")
        yield SimpleNamespace(url=url, env=env, procs=procs, home=home)
    finally:
        procs.stop_all()


def cli(args: list[str], env: dict[str, str], timeout_s: float) -> str:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "deployments", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"python -m deployments {' '.join(args)}: no result after {timeout_s} s: {exc}")
    assert done.returncode == 0, (
        f"{' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done.stdout


def wait_finished(flow_run_id, procs: Processes, timeout_s: float, worker: str = "worker"):
    """The flow run once final; fails early if the worker dies, late with its log tail."""
    deadline = time.perf_counter() + timeout_s
    with get_client(sync_client=True) as client:
        while time.perf_counter() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.is_final():
                return run
            if procs.started[worker].poll() is not None:
                pytest.fail(f"{worker} exited while the run was {run.state}:\n{procs.tail(worker)}")
            time.sleep(1)
    pytest.fail(f"flow run not finished after {timeout_s} s ({run.state}):\n{procs.tail(worker)}")


def check_registered(url: str) -> None:
    """Seven deployments, their pools, the UI form, the pull step, the inactive schedule."""
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    assert set(deployments) == DEPLOYMENTS
    demo = deployments["demo"]
    assert demo.work_pool_name == "linklm-cpu"
    assert deployments["train"].work_pool_name == "linklm-gpu"
    assert demo.parameter_openapi_schema["properties"]["config"]["default"]["n_rows"] == 30_000
    assert "deployments.steps.checkout" in str(demo.pull_steps)
    (schedule,) = deployments["retrain"].schedules
    assert schedule.schedule.cron == "0 3 * * 1" and schedule.active is False


def retrain_schedule(url: str):
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("retrain/retrain")
    (schedule,) = deployment.schedules
    return schedule


def set_retrain_schedule(url: str, active: bool) -> None:
    schedule = retrain_schedule(url)
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        client.update_deployment_schedule(schedule.deployment_id, schedule.id, active=active)


def start_worker(
    server: SimpleNamespace,
    name: str = "worker",
    pool: str = "linklm-cpu",
    env: dict | None = None,
    cwd: Path = ROOT,
    limit: int | None = None,
) -> None:
    """A worker for a pool as the Docker image runs one: with its /health server."""
    port = free_port()
    cmd = [sys.executable, "-m", "deployments", "worker", "--pool", pool, "--healthcheck"]
    cmd += ["--limit", str(limit)] if limit else []
    env = (env or server.env) | {"PREFECT_WORKER_WEBSERVER_PORT": str(port)}
    server.procs.start(name, cmd, env, cwd)
    wait_http_ok(f"http://127.0.0.1:{port}/health", server.procs, name, 120)


def form_field(page, label: str):
    """A setting of the Prefect UI's run form, by its label (the innermost, for a nested one)."""
    title = re.compile(f"^{re.escape(label)} \\(Optional\\)$")
    named = page.locator("span.schema-form-property__label", has_text=title)
    return page.locator("div.schema-form-property").filter(has=named).last


def submit_demo_in_the_ui(server: SimpleNamespace, out_dir: Path, shared: Path):
    """In real headless Chromium, the demo deployment's custom-run form: its settings shown
    with their defaults, made tiny, submitted as a user does; returns the flow run made."""
    with temporary_settings({PREFECT_API_URL: server.url}), get_client(sync_client=True) as c:
        deployment = c.read_deployment_by_name("demo/demo")
    base = server.url.removesuffix("/api")
    edits = {"N Rows": ("30000", "1500"), "Out Dir": ("runs/demo", str(out_dir))}
    edits |= {"Max Steps": ("3000", "6"), "Batch Size": ("32", "16"), "Eval Rows": ("1000", "16")}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.goto(f"{base}/deployments/deployment/{deployment.id}/run")
            for label, (default, tiny) in edits.items():
                box = form_field(page, label).locator(".p-label__body input, textarea").first
                assert box.input_value(timeout=60_000) == default, label  # the config's default
                box.fill(tiny)
            store_field = form_field(page, "Artifacts Url")
            store_field.get_by_role("button", name="str", exact=True).click()
            store_field.locator("input, textarea").first.fill(shared.as_uri())
            page.get_by_role("button", name="Submit").click()
            page.wait_for_url(re.compile(r"tab=Runs"), timeout=60_000)  # the deployment's runs
        finally:
            browser.close()
    with temporary_settings({PREFECT_API_URL: server.url}), get_client(sync_client=True) as c:
        (flow_run,) = c.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )
    return flow_run


def run_tiny_demo(server: SimpleNamespace, out_dir: Path, shared: Path):
    """Submit the demo deployment's form in the UI and wait for a final state."""
    flow_run = submit_demo_in_the_ui(server, out_dir, shared)
    config = flow_run.parameters["config"]
    assert config["n_rows"] == 1500 and config["train"]["max_steps"] == 6
    assert config["train"]["learning_rate"] == 1e-3  # untouched settings keep their defaults
    with temporary_settings({PREFECT_API_URL: server.url}):
        triggered = time.perf_counter()
        finished = wait_finished(flow_run.id, server.procs, RUN_S)
        print(f"demo: trigger to {finished.state.name} in {time.perf_counter() - triggered:.1f} s")
        with get_client(sync_client=True) as client:
            keys = {a.key for a in client.read_artifacts() if a.key}
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[finished.id])
                )
            )
    assert finished.state.is_completed(), (
        f"{finished.state.name}: {finished.state.message}\n{server.procs.tail('worker')}"
    )
    return keys, children


@pytest.fixture(scope="module")
def deployed(server) -> str:
    """The pools and deployments of prefect.yaml on the server; what `up` printed."""
    started = time.perf_counter()
    out = cli(["up"], server.env, DEPLOY_S)
    print(f"pools + deployments registered in {time.perf_counter() - started:.1f} s")
    return out


def test_demo_deployment_runs_on_a_real_worker(server, deployed, tmp_path):
    out = deployed
    assert "work pool linklm-cpu: created" in out and "work pool linklm-gpu: created" in out
    assert "work pool linklm-cpu: exists" in cli(["pools"], server.env, 120)  # idempotent
    check_registered(server.url)
    # a schedule someone turned on stays on through a re-deploy (prefect.yaml says off)
    set_retrain_schedule(server.url, active=True)
    out = cli(["deploy", "--name", "retrain"], server.env, DEPLOY_S)
    assert "retrain: schedule on as before" in out
    assert retrain_schedule(server.url).active is True
    set_retrain_schedule(server.url, active=False)

    start_worker(server)
    shared = tmp_path / "shared"
    keys, children = run_tiny_demo(server, tmp_path / "demo", shared)

    assert {"baselines", "data-validation", "train-run", "evaluation-summary"} <= keys
    assert "demo-artifacts" in keys
    assert len(children) >= 3  # data, train and evaluate ran as subflows on the worker
    reports = list((tmp_path / "demo" / "train").glob("demo-*/eval-test/report/report.html"))
    assert len(reports) == 1 and reports[0].stat().st_size > 10_000
    assert (tmp_path / "demo" / "data" / "manifest.json").exists()
    (copy,) = list((shared / "runs").iterdir())  # the store, as a file:// URL
    assert (copy / "eval-test" / "report" / "report.html").exists()
    assert (copy / store.INDEX_FILE).exists() and not (copy / "checkpoints").exists()


# --- several machines: workers that share nothing but the Prefect API and the store -------

TINY_RETRAIN = {"frozen_rows": 1500, "n_rows": 1500, "eval_rows": 16, "data_seed": 5}
TINY_RETRAIN |= {"train": {"max_steps": 4, "batch_size": 16}}
DATA = {"n_rows": 1500, "seed": 11}  # each machine builds it from its seed: the same rows
SURVIVOR = {
    "data_dir": "runs/data",
    "run_name": "survivor",
    "store_checkpoints": True,
    "max_steps": 60,
    "save_steps": 10,
    "logging_steps": 10,
    "eval_rows": 0,
    "seed": 11,
} | {"batch_size": 16, "learning_rate": 3e-3, "warmup_steps": 2, "max_rows": 800}


def machine(server, tmp_path: Path, name: str, store_env: dict) -> dict:
    """A machine's environment: its own HOME, LINKLM_HOME and PREFECT_HOME; the code from a
    clone of this repository (as a worker tracking a branch gets it), so its runs/ are its
    own; the dataset it trains on built there from its seed."""
    home = tmp_path / name
    env = server.env | store_env | {"HOME": str(home), "LINKLM_HOME": str(home / "linklm")}
    env |= {"PREFECT_HOME": str(home / "prefect"), "LINKLM_GIT_REPOSITORY": str(ROOT)}
    env |= {"PREFECT_WORKER_QUERY_SECONDS": "2", store.LEASE_ENV: "4"}
    env.pop("LINKLM_PROJECT_DIR", None)
    runs = home / "linklm" / "checkouts" / f"{ROOT.name}.runs"  # the clone's runs/ (steps.py)
    dataset.build(runs / "data", GenerationConfig(chunk_size=500, **DATA))
    return env


def trigger(server, deployment: str, config: dict):
    with temporary_settings({PREFECT_API_URL: server.url}):
        return run_deployment(deployment, parameters={"config": config}, timeout=0)


def finished(server, flow_run, worker: str, timeout_s: float = RUN_S):
    with temporary_settings({PREFECT_API_URL: server.url}):
        run = wait_finished(flow_run.id, server.procs, timeout_s, worker)
    assert run.state.is_completed(), (
        f"{run.name}: {run.state.name}: {run.state.message}\n{server.procs.tail(worker, 60)}"
    )
    return run


def test_workers_sharing_only_the_store_train_serve_survive_and_fan_out(
    server, deployed, s3_server, tmp_path
):
    if "worker" in server.procs.started:  # the demo's CPU worker has no store: not this cluster
        server.procs.kill_tree("worker")  # (it took the predict run once, polling faster)
    shared = f"s3://linklm/e2e-{os.getpid()}"
    store_env = s3_server | {store.ENV_VAR: shared}
    gpu_a = machine(server, tmp_path, "gpu-a", store_env)
    cpu = machine(server, tmp_path, "cpu", store_env)
    start_worker(server, "gpu-a", "linklm-gpu", gpu_a, Path(gpu_a["HOME"]), limit=1)
    start_worker(server, "cpu", "linklm-cpu", cpu, Path(cpu["HOME"]))

    # retrain on the GPU pool: the champion and its run land in the store
    started = time.perf_counter()
    finished(server, trigger(server, "retrain/retrain", TINY_RETRAIN), "gpu-a")
    champion = registry.champion(store.registry_url(shared))
    assert champion["artifacts"] == store.run_url(shared, champion["id"])
    assert champion["run_dir"].startswith(gpu_a["HOME"])  # trained there, not on the cpu
    print(f"retrain on gpu-a: {time.perf_counter() - started:.1f} s")

    # predict on the CPU pool: 'champion' resolves through the store, fetched into its cache
    links = store.join(shared, "inputs", "links.csv")
    chunk = next((tmp_path / "gpu-a" / "linklm" / "checkouts").glob("*.runs/data/chunks/*.parquet"))
    with fsspec.open(links, "wb") as fh:
        fh.write(export.to_seed_csv_frame(pl.read_parquet(chunk).head(20)).write_csv().encode())
    answers = store.join(shared, "answers", "links.csv")
    started = time.perf_counter()
    predicted = {"model": "champion", "input": links, "output": answers}
    finished(server, trigger(server, "predict/predict", predicted), "cpu")
    with fsspec.open(answers, "rb") as fh:
        answered = pl.read_csv(fh.read())
    assert answered.height == 20 and answered["candidate_1_mhz"].null_count() == 0
    assert list((tmp_path / "cpu" / "linklm" / "store").glob(f"{champion['id']}-*/run.json"))
    print(f"predict on cpu with the store's champion: {time.perf_counter() - started:.1f} s")

    # a GPU worker dies mid-training (SIGKILL of the worker and its flow run) ...
    checkpoints = store.join(store.run_url(shared, "survivor"), "checkpoints")
    killed = trigger(server, "train/train", SURVIVOR)
    deadline = time.perf_counter() + RUN_S
    while store.latest_published(checkpoints, "checkpoint-") is None:
        assert time.perf_counter() < deadline, server.procs.tail("gpu-a", 60)
        time.sleep(0.3)
    server.procs.kill_tree("gpu-a")
    (step, _) = store.latest_published(checkpoints, "checkpoint-")
    assert step < SURVIVOR["max_steps"]
    # ... and the same run, triggered again, resumes from the store on another one
    gpu_b = machine(server, tmp_path, "gpu-b", store_env)
    start_worker(server, "gpu-b", "linklm-gpu", gpu_b, Path(gpu_b["HOME"]), limit=1)
    started = time.perf_counter()
    resumed = finished(server, trigger(server, "train/train", SURVIVOR), "gpu-b")
    print(f"resumed on gpu-b from step {step}: {time.perf_counter() - started:.1f} s")
    with temporary_settings({PREFECT_API_URL: server.url}), get_client(sync_client=True) as c:
        crashed = c.read_flow_run(killed.id)
        of_resumed = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[resumed.id]))
        logs = " ".join(log.message for log in c.read_logs(log_filter=of_resumed))
    assert crashed.state.name == "Crashed" and str(resumed.id) in crashed.state.message
    assert f"resuming from step {step} of the store" in logs
    # (that it ends with the weights of an uninterrupted run, byte for byte, is asserted in
    # tests/test_store.py, where the uninterrupted run costs less)
    assert resumed.state.is_completed()

    # a sweep, started from a laptop's CLI (a process of its own: a flow run in this test's
    # process would leave Prefect's event worker talking to this server after it is gone),
    # fans its 2 trials out to the 2 GPU workers, which run them at once
    start_worker(server, "gpu-a2", "linklm-gpu", gpu_a, Path(gpu_a["HOME"]), limit=1)
    laptop = tmp_path / "laptop"
    dataset.build(laptop / "runs" / "data", GenerationConfig(chunk_size=500, **DATA))
    args = ["--trial", "learning_rate=1e-3", "--trial", "learning_rate=3e-3", "--max-steps", 6]
    args += ["--batch-size", 16, "--max-rows", 400, "--eval-rows", 16, "--seed", DATA["seed"]]
    args += ["--fan-out", "trial/trial", "--max-parallel", 2, "--artifacts-url", shared]
    started = time.perf_counter()
    done = run_module("flows.sweep", *args, env=server.env | s3_server, cwd=laptop, timeout=RUN_S)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((laptop / "runs" / "sweep" / "sweep.json").read_text())
    with temporary_settings({PREFECT_API_URL: server.url}), get_client(sync_client=True) as c:
        trials = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["trial"])))
    print(f"sweep of 2 trials fanned out: {time.perf_counter() - started:.1f} s")
    assert [r["error"] for r in summary["results"]] == [None, None]
    assert len(trials) == 2 and all(t.state.is_completed() for t in trials)
    first_end = min(t.end_time for t in trials)
    assert max(t.start_time for t in trials) < first_end  # they overlapped in time
    assert all(r["report"].startswith(shared) for r in summary["results"])
