"""The prediction service over real HTTP on 127.0.0.1 (uvicorn in a thread), and its page
in headless Chromium."""

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest
import uvicorn
from conftest import tiny_train_config
from test_registry import FROZEN
from test_registry import _outcome as registry_outcome
from test_report import CHROMIUM, CHROMIUM_ARGS

from linklm.config import ServeConfig
from linklm.data import export
from linklm.model import training
from linklm.serving import predict, registry, service


@pytest.fixture(scope="module")
def runs(small_dataset, tmp_path_factory) -> list[Path]:
    """Two tiny runs with different weights: a champion and the one that replaces it."""
    out = tmp_path_factory.mktemp("serve-runs")
    return [
        Path(
            training.train(tiny_train_config(small_dataset, out, run_name=name, max_steps=steps))[
                "run_dir"
            ]
        )
        for name, steps in (("first", 4), ("second", 8))
    ]


@pytest.fixture(scope="module")
def rows(small_dataset) -> pl.DataFrame:
    return pl.read_parquet(next((small_dataset / "chunks").glob("*.parquet"))).head(8)


@pytest.fixture(scope="module")
def links(rows) -> list[dict]:
    """Eight links as JSON objects, as a client would send them."""
    return [
        {k: (json.loads(v) if k in LIST_COLUMNS else v) for k, v in row.items()}
        for row in export.to_seed_csv_frame(rows).to_dicts()
    ]


LIST_COLUMNS = (
    "device_a_coordinates",
    "device_b_coordinates",
    "available_channels_mhz",
    "spectral_scan_dbm",
)


class Server:
    """A real uvicorn server on a free port of 127.0.0.1, in a thread."""

    def __init__(self, config: ServeConfig):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        app = service.create_app(config.model_copy(update={"port": port}))
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def call(self, path: str, body=None, content_type="application/json", headers=None):
        """(status, parsed JSON body, headers); a 4xx/5xx is returned, not raised."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null"), response.headers
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null"), error.headers


@pytest.fixture(scope="module")
def server(runs):
    config = ServeConfig(model=str(runs[0]), max_links=20, max_body_bytes=200_000)
    with Server(config) as running:
        yield running


def test_one_link_and_a_list_get_flows_predicts_answers(server, runs, links, rows):
    expected = predict.Predictor(str(runs[0])).predict(predict.records_to_text(links)).rows
    status, one, headers = server.call("/v1/predict", links[0])
    assert status == 200 and isinstance(one, dict)
    assert list(one) == expected.columns  # the same fields, in the same order
    assert one["recommended_channel_mhz"] == expected["recommended_channel_mhz"][0]
    assert headers["X-Model-Weights-SHA256"] == service.weights_sha256(runs[0] / "model")
    status, many, _ = server.call("/v1/predict", links)
    assert status == 200 and len(many) == len(links)
    assert [a["scenario_id"] for a in many] == expected["scenario_id"].to_list()
    assert [a["recommended_channel_mhz"] for a in many] == expected[
        "recommended_channel_mhz"
    ].to_list()
    wrapped = server.call("/v1/predict", {"links": links[:2]})[1]
    assert [a["scenario_id"] for a in wrapped] == expected["scenario_id"].to_list()[:2]
    csv = export.to_seed_csv_frame(rows.head(3)).write_csv().encode()
    status, from_csv, _ = server.call("/v1/predict", csv, "text/csv")
    assert status == 200 and [a["scenario_id"] for a in from_csv] == [
        link["scenario_id"] for link in links[:3]
    ]


def test_bad_requests_are_4xx_naming_the_field_and_the_service_goes_on(server, links):
    cases = [
        (b"{not json", 400, "body is not JSON"),
        (b"", 400, "empty body"),
        (json.dumps([1, 2]).encode(), 422, "link 0 is not a JSON object"),
        (json.dumps([]).encode(), 422, "non-empty list"),
        (json.dumps(links[0] | {"tx_power_dbm": "loud"}).encode(), 422, "tx_power_dbm"),
        (json.dumps(links[0] | {"tx_power_dbm": [1, 2]}).encode(), 422, "tx_power_dbm"),
        (json.dumps({"tx_power_dbm": 20}).encode(), 422, "missing"),
        (json.dumps(links * 3).encode(), 413, "over the 20 allowed"),
        (b"[" + b" " * 300_000 + b"]", 413, "over the 200,000 allowed"),
    ]
    for body, status, words in cases:
        got, answer, _ = server.call("/v1/predict", body)
        assert got == status and words in answer["detail"], (body[:60], got, answer)
    got, answer, _ = server.call(
        "/v1/predict", links[:2] + [links[2] | {"environment_type": "Moon"}]
    )
    assert got == 422 and answer["problems"][0]["link"] == 2
    assert answer["problems"][0]["field"] == "environment_type"

    # a body streamed without a length is cut off at the limit too: the client sees the 413,
    # or (refused mid-stream, the server closes the connection) a cut before the body was
    # all sent, and no other status; a service without the limit would take all 10,000,000
    # bytes and answer 400
    status, sent = _stream_spaces(server.url, chunks=1000, chunk_bytes=10_000)
    assert status == 413 or (status is None and sent < 1000), (status, sent)

    assert server.call("/v1/predict", links[0])[0] == 200  # still serving
    health = server.call("/health")[1]
    assert health["status"] == "ok" and health["bad_requests"] >= len(cases) + 2


def _stream_spaces(url: str, chunks: int, chunk_bytes: int) -> tuple[int | None, int]:
    """POST a body of spaces in chunked encoding (no length declared): the status (None
    when the connection was cut) and how many chunks went out before it was."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", "/v1/predict")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    sent = 0
    try:
        for _ in range(chunks):
            connection.send(b"%x\r\n%s\r\n" % (chunk_bytes, b" " * chunk_bytes))
            sent += 1
        connection.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        return connection.getresponse().status, sent
    except (ConnectionError, http.client.HTTPException):
        return None, sent
    finally:
        connection.close()


def test_concurrent_requests_share_model_calls(server, links):
    before = server.call("/health")[1]["batching"]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: server.call("/v1/predict", links[i % 8]), range(48)))
    assert all(status == 200 for status, _, _ in results)
    assert [r[1]["scenario_id"] for r in results] == [
        links[i % 8]["scenario_id"] for i in range(48)
    ]
    after = server.call("/health")[1]["batching"]
    calls = after["model_calls"] - before["model_calls"]
    assert after["requests"] - before["requests"] == 48
    assert calls < 48, f"48 concurrent requests took {calls} model calls: no batching"


def test_model_info_and_docs_are_served_without_a_cdn(server, runs):
    info = server.call("/v1/model")[1]
    assert info["run_dir"] == str(runs[0]) and len(info["weights_sha256"]) == 64
    spec = server.call("/openapi.json")[1]
    assert "/v1/predict" in spec["paths"] and "/health" in spec["paths"]
    with urllib.request.urlopen(server.url + "/docs", timeout=30) as response:
        page = response.read().decode()
    assert "cdn" not in page.lower() and "/openapi.json" in page
    with urllib.request.urlopen(server.url + "/static/vega.js", timeout=60) as response:
        assert len(response.read()) > 100_000  # Vega, Vega-Lite and vega-embed, from the app


def test_a_new_champion_is_served_without_a_restart(runs, links, tmp_path):
    path = tmp_path / "registry.json"
    registry.record_decision(path, _outcome("c1", runs[0], 0.5), None, FROZEN)
    config = ServeConfig(model="champion", registry=str(path), reload_every_s=0.2)
    with Server(config) as running:
        first = running.call("/v1/predict", links[0])[2]["X-Model-Weights-SHA256"]
        assert first == service.weights_sha256(runs[0] / "model")
        registry.record_decision(path, _outcome("c2", runs[1], 0.6, 0.5), "c1", FROZEN)
        deadline = time.monotonic() + 60
        while running.call("/v1/model")[1]["champion_id"] != "c2":
            assert time.monotonic() < deadline, "the new champion was never picked up"
            time.sleep(0.2)
        status, _, headers = running.call("/v1/predict", links[0])
        assert status == 200
        assert headers["X-Model-Weights-SHA256"] == service.weights_sha256(runs[1] / "model")
        assert headers["X-Model-Weights-SHA256"] != first


def _outcome(name: str, run_dir: Path, score: float, champion_score=None) -> dict:
    """test_registry's decision outcome, for a real run folder."""
    return registry_outcome(name, score, champion_score) | {"run_dir": str(run_dir)}


def test_the_planners_page_answers_and_draws_the_scan_in_chromium(server):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: scripts/test.sh installs it"
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "request",
                lambda r: r.url.startswith(server.url) or problems.append(f"fetched {r.url}"),
            )
            page.goto(server.url + "/")
            page.wait_for_selector("#f-tx_power_dbm")
            page.fill("#f-tx_power_dbm", "19.5")
            page.click("#submit")
            page.wait_for_selector("#chart svg", timeout=30_000)
            answer = page.inner_text("#answer")
            assert "MHz" in answer or "No usable answer" in answer
            assert page.locator("#candidates tbody tr").count() == 3
            assert page.locator("#chart svg .mark-rect path").count() >= 10  # one bar per channel

            page.fill("#f-tx_power_dbm", "loud")
            page.click("#submit")
            page.wait_for_function("document.getElementById('error-tx_power_dbm').textContent")
            assert "not a number" in page.inner_text("#error-tx_power_dbm")
            assert "tx_power_dbm" in page.inner_text("#message")
            assert page.get_attribute("#f-tx_power_dbm", "class") == "invalid"
        finally:
            browser.close()
    # the 422 of the bad value is the one console error a browser logs for a failed fetch
    assert [p for p in problems if "422" not in p] == []
