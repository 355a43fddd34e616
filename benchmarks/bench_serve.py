"""The prediction service under load: requests/s and latency against the bare Predictor.

    python benchmarks/bench_serve.py                       # the default model, 10 s a level
    python benchmarks/bench_serve.py --model runs/train/my-run --seconds 20 --load-seconds 60

Starts ``python -m flows.serve`` as its own process on 127.0.0.1, then sends single-link
requests from 1, 8 and 32 client threads (keep-alive connections) for ``--seconds`` each:
requests/s, p50 and p99 latency, and how many links the service answered per model call.
In the same run, the bare ``Predictor`` in this process answers the same links one call per
link and 64 per call: the reference the service's batching should approach. Last, a
bounded load run (``--load-seconds``, concurrency 8) must end with no failed request. Peak
memory (VmHWM) of the service process is printed. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linklm.config import GenerationConfig  # noqa: E402
from linklm.data import dataset, export  # noqa: E402
from linklm.serving import predict  # noqa: E402

LISTS = ("device_a_coordinates", "device_b_coordinates", "available_channels_mhz")


def _links(n: int, folder: Path) -> list[dict]:
    dataset.build(folder, GenerationConfig(n_rows=n, chunk_size=n, seed=3))
    text = export.to_seed_csv_frame(dataset.scan(folder).collect())
    links = []
    for row in text.to_dicts():
        for key in (*LISTS, "spectral_scan_dbm"):
            row[key] = json.loads(row[key])
        links.append(row)
    return links


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(model: str, port: int, extra: list[str], log: Path) -> subprocess.Popen:
    """The service as its own process, its log (a line per request) to a file: a pipe
    nobody reads fills up and stalls the server."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.serve", "--model", model, "--port", str(port), *extra],
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"the service exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the service did not answer /health within 180 s")


def _peak_memory_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _get(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path)
    return json.loads(connection.getresponse().read())


def _load(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """``clients`` threads, each on its own keep-alive connection, sending one link per
    request until ``seconds`` pass: requests/s, latencies, failures."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    stop = time.perf_counter() + seconds

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = index
        while time.perf_counter() < stop:
            body = bodies[i % len(bodies)]
            i += clients
            began = time.perf_counter()
            try:
                connection.request(
                    "POST", "/v1/predict", body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            latencies[index].append(time.perf_counter() - began)
            failures[index] += not ok

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = np.array([x for per in latencies for x in per]) * 1000
    return {
        "clients": clients,
        "requests": int(flat.size),
        "requests_per_s": flat.size / elapsed,
        "p50_ms": float(np.percentile(flat, 50)) if flat.size else float("nan"),
        "p99_ms": float(np.percentile(flat, 99)) if flat.size else float("nan"),
        "failed": int(sum(failures)),
    }


def _bare(model: str, links: list[dict], seconds: float) -> tuple[float, float, float]:
    """The Predictor in this process: (links/s one per call, p50 ms of one, links/s 64 per call)."""
    predictor = predict.Predictor(model, batch_size=64)
    frames = [predict.records_to_text([link]) for link in links]
    predictor.predict(frames[0])  # warm
    times, stop, i = [], time.perf_counter() + seconds, 0
    while time.perf_counter() < stop:
        began = time.perf_counter()
        predictor.predict(frames[i % len(frames)])
        times.append(time.perf_counter() - began)
        i += 1
    batch = predict.records_to_text(links[:64])
    began, calls = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        predictor.predict(batch)
        calls += 1
    batched = 64 * calls / (time.perf_counter() - began)
    return len(times) / sum(times), float(np.median(times) * 1000), batched


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="linklm-default", help="a run folder, a model, a name")
    parser.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--batch-window-ms", default="5")
    parser.add_argument("--max-batch", default="64")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    links = _links(512, work / "data")
    bodies = [json.dumps(link).encode() for link in links]
    one_per_call, one_p50, batched = _bare(args.model, links, args.seconds)
    print(
        f"bare Predictor ({args.model}): {one_per_call:.1f} links/s one per call "
        f"(p50 {one_p50:.1f} ms), {batched:.1f} links/s 64 per call"
    )

    port = _free_port()
    extra = ["--batch-window-ms", args.batch_window_ms, "--max-batch", args.max_batch]
    service = _start(args.model, port, extra, work / "service.log")
    try:
        print(
            f"{'clients':>8}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}{'links/call':>12}"
        )
        for clients in (int(c) for c in args.levels.split(",")):
            before = _get(port, "/health")["batching"]
            row = _load(port, bodies, clients, args.seconds)
            after = _get(port, "/health")["batching"]
            calls = after["model_calls"] - before["model_calls"]
            per_call = (after["links"] - before["links"]) / calls if calls else float("nan")
            print(
                f"{clients:>8}{row['requests_per_s']:>12.1f}{row['p50_ms']:>9.1f}"
                f"{row['p99_ms']:>9.1f}{row['failed']:>8}{per_call:>12.1f}"
            )
        load = _load(port, bodies, 8, args.load_seconds)
        print(
            f"load run: {load['requests']} requests in {args.load_seconds:.0f} s from 8 clients "
            f"({load['requests_per_s']:.1f}/s, p99 {load['p99_ms']:.1f} ms), "
            f"{load['failed']} failed"
        )
        peak = _peak_memory_mb(service.pid)
        print(f"service peak memory (VmHWM): {peak:.0f} MB" if peak else "peak memory: unknown")
        health = _get(port, "/health")
        print(f"service batching: {health['batching']}")
        if load["failed"]:
            raise SystemExit(f"{load['failed']} requests failed in the load run")
    finally:
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()


if __name__ == "__main__":
    main()
