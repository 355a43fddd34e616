"""Secrets never leak: with fake credentials set, real flows run against the Prefect test
server (data -> train -> evaluate -> predict -> publish), then every place a secret could
land is searched for them: the files written, the server's logs, artifacts, flow and task
runs, states and database, the processes' stdout/stderr and exception messages, and the
notebooks.

The push goes to a local stand-in for the Hub that answers every request with an error
echoing the Authorization header it received (in the status line, a request-id header and
the body): it proves the token really reached the request, and that an error built from a
server's answer is still printed without it.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ROOT

HF_TOKEN = "hf_FAKEsecret0123456789abcdef"
BLOCK_TOKEN = "hf_FAKEblock9876543210fedcba"  # only in the Prefect Secret block 'hf-token'
API_KEY = "pnu_FAKEkey0123456789"
SECRETS = (HF_TOKEN, BLOCK_TOKEN, API_KEY)
REPO_ID = "me/linklm-secret-test"


def _found(data: str | bytes) -> list[str]:
    """The secrets in a text: the full value or its body without the prefix (a partly
    masked or re-encoded copy like 'hf_***' + body still counts)."""
    data = data.encode() if isinstance(data, str) else data
    return [s for s in SECRETS if s.split("_", 1)[1].encode() in data]


def _leaky_files(root: Path) -> tuple[dict[str, list[str]], int]:
    """{file: secrets found} over every file under root, binary ones included."""
    leaks, scanned = {}, 0
    for path in sorted(Path(root).rglob("*")):
        if path.is_file() and not path.is_symlink():
            scanned += 1
            if hits := _found(path.read_bytes()):
                leaks[str(path.relative_to(root))] = hits
    return leaks, scanned


def test_the_search_finds_a_planted_secret(tmp_path):
    """The searches below can fail: a secret written anywhere, in any form searched, is found."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "run.json").write_text(json.dumps({"token": HF_TOKEN}))
    (tmp_path / "weights.bin").write_bytes(b"\x00\xff" + API_KEY.encode() + b"\x00")
    (tmp_path / "clean.txt").write_text("nothing here: hf_*** pnu_***")
    leaks, scanned = _leaky_files(tmp_path)
    assert scanned == 3
    assert leaks == {"a/b/run.json": [HF_TOKEN], "weights.bin": [API_KEY]}
    assert _found(f"Bearer hf_***{BLOCK_TOKEN[3:]}") == [BLOCK_TOKEN]
    assert _found("hf_FAKEsecret") == []


# -- a stand-in for the Hub that echoes the credentials it receives --------------------------


class _EchoHub(BaseHTTPRequestHandler):
    seen: list[str] = []

    def _answer(self):
        auth = self.headers.get("Authorization", "")
        self.seen.append(auth)
        body = json.dumps({"error": f"token {auth} rejected"}).encode()
        self.send_response(500, f"denied {auth}")
        self.send_header("X-Request-Id", auth)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, *args):  # no access log on stderr
        pass


@pytest.fixture(scope="module")
def echo_hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _EchoHub.seen = []
    yield f"http://127.0.0.1:{server.server_port}", _EchoHub.seen
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def secret_block(prefect_harness):
    """The Prefect Secret block 'hf-token' holding BLOCK_TOKEN, removed afterwards."""
    from prefect.blocks.system import Secret

    Secret(value=BLOCK_TOKEN).save("hf-token", overwrite=True)
    yield "hf-token"
    Secret.delete("hf-token")


# -- the flows, run the way a worker runs them: a separate process on the server's API -------

RUNNER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    import tasks.predict as t

    t.push = t.push.with_options(retry_delay_seconds=0)  # keep the retries, skip their waits

    from flows import publish
    from flows.cli import run_cli
    from flows.data import data_flow
    from flows.evaluate import evaluate_flow
    from flows.predict import predict_flow
    from flows.train import train_flow
    from linklm.config import (
        DataFlowConfig, EvalConfig, GenerationConfig, PredictConfig, TrainConfig,
    )

    base = Path(sys.argv[1])
    data = base / "data"
    gen = GenerationConfig(n_rows=600, chunk_size=300, seed=3)
    data_flow(DataFlowConfig(out_dir=data, generation=gen, shard_rows=200))
    summary = train_flow(
        TrainConfig(
            data_dir=data, out_dir=base / "runs", run_name="secret", max_steps=2,
            batch_size=8, eval_rows=8, eval_steps=1, save_steps=2, logging_steps=1,
            warmup_steps=0,
        )
    )
    run_dir = summary["run_dir"]
    evaluate_flow(
        EvalConfig(model=run_dir, data_dir=data, max_rows=20, baseline_train_rows=200,
                   tabular_rows=100)
    )
    predict_flow(PredictConfig(model=run_dir, input=str(data), output=str(base / "answers.csv")))
    state = publish.publish_flow(
        Path(run_dir), "REPO_ID", out_dir=base / "upload", return_state=True
    )
    print("publish flow:", state.type.value, repr(state.result(raise_on_failure=False)))
    # The same push through the CLI's code path, the token now from the Secret block.
    os.environ.pop("HF_TOKEN")
    sys.stdout.flush()
    run_cli(lambda: publish.main([run_dir, "--repo-id", "REPO_ID", "--out-dir",
                                  str(base / "upload-cli")]))
    """
).replace("REPO_ID", REPO_ID)


def _server_database() -> Path:
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    assert url.startswith("sqlite"), url
    return Path(url.split(":///", 1)[1])


@pytest.fixture(scope="module")
def leak_run(prefect_harness, secret_block, echo_hub, tmp_path_factory):
    """Every flow once with fake secrets in the environment; what they printed and when."""
    from prefect.settings import PREFECT_API_URL

    base = tmp_path_factory.mktemp("secrets")
    env = dict(
        os.environ,
        HF_TOKEN=HF_TOKEN,
        PREFECT_API_KEY=API_KEY,
        PREFECT_API_URL=PREFECT_API_URL.value(),  # the test server: logs and runs land there
        HF_ENDPOINT=echo_hub[0],
        NO_PROXY="127.0.0.1,localhost",
        PREFECT_HOME=str(base / "prefect-home"),
        LINKLM_HOME=str(base / "linklm-home"),
        HF_HOME=str(base / "hf-home"),
    )
    env.pop("HUGGING_FACE_HUB_TOKEN", None)
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(base)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return {"base": base, "done": done, "started": started, "seconds": time.time() - started}


def test_the_flows_ran_and_both_tokens_reached_the_push(leak_run, echo_hub):
    done, base = leak_run["done"], leak_run["base"]
    assert done.returncode == 2, done.stderr[-3000:]  # the CLI's exit code for a failed push
    assert f"error: push to {REPO_ID} failed (HfHubHTTPError)" in done.stderr.splitlines()[-1]
    assert "publish flow: FAILED PublishError" in done.stdout
    for name in ("manifest.json", "validation/report.md", "export/links.csv"):
        assert (base / "data" / name).exists(), name
    run = base / "runs" / "secret"
    for name in ("run.json", "README.md", "eval-test/metrics.json", "eval-test/report/report.md"):
        assert (run / name).exists(), name
    assert (base / "answers.csv").exists() and (base / "upload" / "README.md").exists()
    # the env token went with the flow's push, the Secret block's with the CLI's
    assert {f"Bearer {HF_TOKEN}", f"Bearer {BLOCK_TOKEN}"} <= set(echo_hub[1])


def test_no_secret_in_any_file_written(leak_run):
    """Run folders (run.json with its config, history, model card, metrics, reports,
    predictions, checkpoints, the upload folder), the dataset, Prefect's and the project's
    home folders and the Hugging Face home of the run."""
    leaks, scanned = _leaky_files(leak_run["base"])
    assert scanned > 50
    assert leaks == {}


def test_no_secret_in_printed_output_or_exception_messages(leak_run):
    done = leak_run["done"]
    # the failed push: called from Python, Prefect logs it with its traceback; through the
    # CLI, a platform error's message says what went wrong, and the terminal shows that line
    # without two tracebacks of engine frames above it
    api_call, cli_call = done.stderr.rsplit("for flow 'publish'", 1)
    assert "Traceback" in api_call.split("for flow 'publish'")[-1]
    assert "Traceback" not in cli_call and "Encountered exception" in cli_call, cli_call
    assert _found(done.stdout) == [] and _found(done.stderr) == []


def _flow_runs_since(client, started: float):
    from datetime import UTC, datetime

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    after = datetime.fromtimestamp(started - 1, UTC)
    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=after))
    )


def _all_pages(read, **kwargs) -> list:
    items, offset = [], 0
    while page := read(limit=200, offset=offset, **kwargs):
        items += page
        offset += len(page)
    return items


def test_no_secret_in_prefect_logs_artifacts_parameters_or_states(leak_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        runs = _flow_runs_since(client, leak_run["started"])
        flows = {f.id: f.name for f in client.read_flows()}
        ids = [r.id for r in runs]
        logs = _all_pages(
            client.read_logs, log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids))
        )
        artifacts = _all_pages(
            client.read_artifacts,
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)),
        )
        task_runs = _all_pages(
            client.read_task_runs,
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)),
        )
        states = [s for i in ids for s in client.read_flow_run_states(i)]
    names = sorted(flows[r.flow_id] for r in runs)
    assert {"data", "train", "evaluate", "predict"} <= set(names)
    assert names.count("publish") == 2
    messages = [log.message for log in logs]
    assert any("push to" in m and "failed" in m for m in messages)  # the failure was logged
    assert any("Traceback" in m for m in messages)  # with its traceback, in the run's logs
    assert {"train-summary", "evaluation-summary", "predict-summary"} <= {a.key for a in artifacts}
    assert len(task_runs) > 10
    assert _found("\n".join(messages)) == []
    assert _found(json.dumps([a.model_dump(mode="json") for a in artifacts])) == []
    stored = [r.model_dump(mode="json") for r in runs]  # parameters, state, context
    assert _found(json.dumps(stored)) == []
    assert _found(json.dumps([t.model_dump(mode="json") for t in task_runs])) == []
    assert _found(json.dumps([s.model_dump(mode="json") for s in states])) == []
    assert any("PublishError" in (s.message or "") for s in states)


def test_no_secret_in_the_servers_database(leak_run):
    """Whatever the server stored (events and block documents included); the Secret
    block's value is kept encrypted there, so it does not show either."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.read_flows()  # the server is up and has written since the run
    database = _server_database()
    files = [p for p in database.parent.iterdir() if p.name.startswith(database.name)]
    assert database in files and database.stat().st_size > 100_000
    assert {p.name: _found(p.read_bytes()) for p in files} == {p.name: [] for p in files}


# -- in-process checks ------------------------------------------------------------------------


def test_hf_token_comes_from_the_environment_then_the_secret_block(secret_block, monkeypatch):
    from tasks import secrets

    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    assert secrets.hf_token() == HF_TOKEN
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert secrets.hf_token() == BLOCK_TOKEN
    assert secrets.hf_token("no-such-block") is None


def test_a_failed_push_never_repeats_the_token(echo_hub, tmp_path, monkeypatch, capfd):
    """Even when the server's answer echoes the credentials, the one-line error (and the
    traceback a log would show) names the failure without them."""
    from huggingface_hub import constants

    from linklm.serving import publish

    monkeypatch.setattr(constants, "ENDPOINT", echo_hub[0])
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with pytest.raises(publish.PublishError) as failure:
        publish.push(tmp_path, REPO_ID, True, HF_TOKEN)
    assert f"Bearer {HF_TOKEN}" in echo_hub[1]  # the server did receive it (and echoed it)
    message = str(failure.value)
    assert message.startswith(f"push to {REPO_ID} failed (HfHubHTTPError)") and "\n" not in message
    shown = "".join(traceback.format_exception(failure.value))
    assert _found(message) == [] and _found(shown) == []
    out, err = capfd.readouterr()
    assert _found(out + err) == []


def test_deployments_cli_never_prints_the_api_key(tmp_path):
    """The key goes from the environment to Prefect's client; a failure prints no key."""
    env = dict(
        os.environ,
        PREFECT_API_KEY=API_KEY,
        PREFECT_HOME=str(tmp_path / "home"),
        PREFECT_CLIENT_MAX_RETRIES="0",
        NO_PROXY="127.0.0.1,localhost",
    )
    done = subprocess.run(
        [sys.executable, "-m", "deployments", "--api-url", "http://127.0.0.1:9/api", "pools"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2  # nothing listens on port 9: one line, not a traceback
    assert done.stderr.strip().splitlines() == [
        "error: http://127.0.0.1:9/api: no Prefect API answers there (ConnectError); start one "
        "(prefect server start --host 127.0.0.1) or pass --api-url"
    ]
    assert _found(done.stdout + done.stderr) == []


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9]{20,}|pnu_[A-Za-z0-9]{20,}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs_and_no_tokens(path):
    nb = json.loads(path.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert outputs == []
    assert _found(path.read_bytes()) == [] and not TOKEN_LIKE.search(path.read_text())


def test_colab_secrets_cell_prints_names_never_values(monkeypatch, capfd):
    """The notebook cell that reads Colab's secrets, run with a stand-in for
    google.colab.userdata holding the fake values: its output shows no value."""
    import types

    nb = json.loads((ROOT / "notebooks" / "colab_worker.ipynb").read_text())
    (cell,) = [
        "".join(c["source"])
        for c in nb["cells"]
        if c["cell_type"] == "code" and "userdata" in "".join(c["source"])
    ]
    values = {
        "PREFECT_API_URL": "https://prefect.example.org/api",
        "PREFECT_API_KEY": API_KEY,
        "HF_TOKEN": HF_TOKEN,
    }
    userdata = types.ModuleType("google.colab.userdata")
    userdata.SecretNotFoundError = type("SecretNotFoundError", (Exception,), {})
    userdata.NotebookAccessError = type("NotebookAccessError", (Exception,), {})
    userdata.get = values.__getitem__
    colab = types.ModuleType("google.colab")
    colab.userdata = userdata
    google = types.ModuleType("google")
    google.colab = colab
    for name, module in (
        ("google", google),
        ("google.colab", colab),
        ("google.colab.userdata", userdata),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    for name in (*values, "LINKLM_PROJECT_DIR"):
        # setenv first so that monkeypatch records the old state, unset included, and the
        # cell's exports are undone after the test (a bare delenv of an unset name records
        # nothing: PREFECT_API_URL then leaked into later tests of the same process)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    exec(compile(cell, "colab_worker.ipynb", "exec"), {})
    assert os.environ["HF_TOKEN"] == HF_TOKEN  # the cell did read and export the secrets
    out, err = capfd.readouterr()
    assert "HF_TOKEN" in out and "PREFECT_API_KEY" in out
    assert _found(out + err) == []
