"""End to end, the way users run it: a real Prefect server, the work pools, the deployments
of prefect.yaml, a real process worker, a demo run triggered through the API.

Everything runs on 127.0.0.1 with its own PREFECT_HOME; every process started here is
stopped by its process group at the end, whatever happened. Each wait has a deadline and
fails with the tail of the process's log instead of hanging.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from linklm import store

SERVER_START_S = 120
DEPLOY_S = 300
RUN_S = 480
DEPLOYMENTS = {"data", "train", "evaluate", "learning-curve", "sweep", "demo", "retrain", "predict"}
TINY_DEMO = {"n_rows": 1500, "train": {"max_steps": 6, "batch_size": 16}, "eval_rows": 40}


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

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop_all)
        self.logs.append(log)
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started[name] = proc
        return proc

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

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


def wait_finished(flow_run_id, procs: Processes, timeout_s: float):
    """The flow run once final; fails early if the worker dies, late with its log tail."""
    deadline = time.perf_counter() + timeout_s
    with get_client(sync_client=True) as client:
        while time.perf_counter() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.is_final():
                return run
            if procs.started["worker"].poll() is not None:
                pytest.fail(
                    f"the worker exited while the run was {run.state}:\n{procs.tail('worker')}"
                )
            time.sleep(1)
    pytest.fail(f"flow run not finished after {timeout_s} s ({run.state}):\n{procs.tail('worker')}")


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


def start_worker(server: SimpleNamespace) -> None:
    """A worker for the CPU pool as the Docker image runs one: with its /health server."""
    port = free_port()
    cmd = [sys.executable, "-m", "deployments", "worker", "--pool", "linklm-cpu", "--healthcheck"]
    server.procs.start("worker", cmd, server.env | {"PREFECT_WORKER_WEBSERVER_PORT": str(port)})
    wait_http_ok(f"http://127.0.0.1:{port}/health", server.procs, "worker", 120)


def run_tiny_demo(server: SimpleNamespace, out_dir: Path, shared: Path):
    """Trigger the demo deployment through the API and wait for a final state."""
    parameters = {"config": TINY_DEMO | {"out_dir": str(out_dir), "artifacts_url": shared.as_uri()}}
    with temporary_settings({PREFECT_API_URL: server.url}):
        triggered = time.perf_counter()
        flow_run = run_deployment("demo/demo", parameters=parameters, timeout=0)
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


def test_demo_deployment_runs_on_a_real_worker(server, tmp_path):
    started = time.perf_counter()
    out = cli(["up"], server.env, DEPLOY_S)
    assert "work pool linklm-cpu: created" in out and "work pool linklm-gpu: created" in out
    assert "work pool linklm-cpu: exists" in cli(["pools"], server.env, 120)  # idempotent
    print(f"pools + deployments registered in {time.perf_counter() - started:.1f} s")
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
