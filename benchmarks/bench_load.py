"""Load: the data flow at 5M rows in bounded memory; a Prefect server under 50 subflow pairs.

    python benchmarks/bench_load.py data                 # 500k rows, then 5M rows
    python benchmarks/bench_load.py data --sizes 5000000
    python benchmarks/bench_load.py server               # learning curve, 50 points

``data`` runs ``python -m flows.data`` (generate, verify, validate, CSV+ZIP export, shards)
in a subprocess per size and samples the resident memory of its whole process tree
(Prefect's ephemeral server included) every 50 ms: peak RSS should stay flat while the
rows grow tenfold. ``server`` starts a real ``prefect server`` on 127.0.0.1, runs the
learning-curve flow with 50 sizes (50 train and 50 evaluate subflows, tiny ones) against
it, and reports wall time, the server's peak RSS, API latency while it runs, and the
flow-run states the server recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


class TreeMemory:
    """Peak resident memory of a process and all its children, sampled in a thread."""

    def __init__(self, pid: int, every_s: float = 0.05):
        self.proc, self.every_s, self.peak = psutil.Process(pid), every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        rss += p.memory_info().rss
                self.peak = max(self.peak, rss)
            except psutil.Error:
                return
            time.sleep(self.every_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _env(home: Path) -> dict:
    env = dict(os.environ, PREFECT_HOME=str(home))
    env.pop("PREFECT_API_URL", None)
    return env


def data_load(sizes: list[int], chunk_size: int) -> None:
    print(f"{'rows':>10}{'wall s':>9}{'rows/s':>11}{'peak RSS (tree)':>17}{'on disk':>10}")
    for n_rows in sizes:
        work = Path(tempfile.mkdtemp(prefix="bench-load-"))
        cmd = [sys.executable, "-m", "flows.data", "--out-dir", str(work / "data")]
        cmd += ["--n-rows", str(n_rows), "--chunk-size", str(chunk_size), "--seed", "1"]
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=_env(work / "home"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        memory = TreeMemory(proc.pid)
        output = proc.communicate()[0].decode(errors="replace")
        peak = memory.stop()
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            print(output[-3000:])
            raise SystemExit(f"data flow failed at {n_rows} rows (exit {proc.returncode})")
        size = sum(f.stat().st_size for f in (work / "data").rglob("*") if f.is_file())
        print(
            f"{n_rows:>10,}{seconds:>9.1f}{n_rows / seconds:>11,.0f}{peak / 2**20:>14,.0f} MB"
            f"{size / 2**30:>8.2f} GB"
        )
        shutil.rmtree(work, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(api: str, timeout_s: float = 120) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"prefect server at {api} not healthy after {timeout_s:.0f} s")


class Latency:
    """GET /health once a second while the flow runs: the API stays responsive or not."""

    def __init__(self, api: str):
        self.api, self.samples, self.errors = api, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(f"{self.api}/health", timeout=10):
                    self.samples.append(time.perf_counter() - started)
            except OSError:
                self.errors += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def server_load(points: int, step: int, eval_rows: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        + ["--port", str(port)],
        cwd=ROOT,
        env=_env(work / "server-home"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server_memory = TreeMemory(server.pid, every_s=0.5)
    try:
        print(f"server healthy after {_wait_healthy(api):.1f} s on {api}")
        sizes = ",".join(str(step * (i + 1)) for i in range(points))
        cmd = [sys.executable, "-m", "flows.learning_curve", "--data-dir", str(work / "data")]
        cmd += ["--n-rows", str(max(4000, step * points * 2)), "--sizes", sizes]
        cmd += ["--epochs", "1", "--eval-rows", str(eval_rows), "--out-dir", str(work / "lc")]
        env = dict(_env(work / "client-home"), PREFECT_API_URL=api)
        latency = Latency(api)
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        latency.stop()
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-4000:])
            raise SystemExit(f"learning-curve flow failed (exit {done.returncode})")
        states = _flow_run_states(env)
        result = json.loads((work / "lc" / "learning_curve.json").read_text())
        print(
            f"learning curve: {points} points ({len(result['points'])} in learning_curve.json), "
            f"{seconds:.0f} s wall, {seconds / points:.1f} s per point"
        )
        print("flow runs the server recorded:", ", ".join(f"{k} {v}" for k, v in states.items()))
        if latency.samples:
            p50 = statistics.median(latency.samples) * 1000
            worst = max(latency.samples) * 1000
            print(
                f"API /health during the run: {len(latency.samples)} probes, median {p50:.0f} ms, "
                f"max {worst:.0f} ms, {latency.errors} failed"
            )
        print(f"server process tree peak RSS: {server_memory.peak / 2**20:,.0f} MB")
    finally:
        server_memory.stop()
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def _flow_run_states(env: dict) -> dict[str, int]:
    """Count flow runs per (flow name, state) through the client, in a child process."""
    code = (
        "import json, collections\n"
        "from prefect.client.orchestration import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    runs, offset = [], 0\n"
        "    while batch := c.read_flow_runs(limit=200, offset=offset):\n"
        "        runs += batch; offset += len(batch)\n"
        "    flows = {f.id: f.name for f in c.read_flows()}\n"
        "print(json.dumps(collections.Counter(f'{flows[r.flow_id]} {r.state.name}' "
        "for r in runs)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data")
    data.add_argument("--sizes", default="500000,5000000")
    data.add_argument("--chunk-size", type=int, default=20_000)
    server = sub.add_parser("server")
    server.add_argument("--points", type=int, default=50)
    server.add_argument("--step", type=int, default=40, help="rows added per point")
    server.add_argument("--eval-rows", type=int, default=50)
    args = parser.parse_args()
    if args.command == "data":
        data_load([int(s) for s in args.sizes.split(",")], args.chunk_size)
    else:
        server_load(args.points, args.step, args.eval_rows)


if __name__ == "__main__":
    main()
