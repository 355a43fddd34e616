"""Work pools, deployments and workers against any Prefect API (local, self-hosted, Cloud).

    python -m deployments up --api-url http://127.0.0.1:4200/api      # pools + all deployments
    python -m deployments deploy --name demo --name retrain           # some deployments
    python -m deployments pools                                       # just the work pools
    python -m deployments worker --pool linklm-gpu --limit 1          # a worker, here

Every command is idempotent: pools that exist are left alone, deployments are upserted by
name, and a schedule someone turned on (or off) stays so through a re-deploy. The API comes
from --api-url, else PREFECT_API_URL from the environment or the active Prefect profile
(``prefect config set``, ``prefect cloud login``; PREFECT_API_KEY likewise, never printed).
Without one, the commands refuse: an ephemeral server would vanish with the command and
nothing would be registered.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments import pools
from deployments.steps import HERE
from flows.cli import ArgumentParser, fail, run_cli

PREFECT_FILE = HERE / "prefect.yaml"


def api_environment(api_url: str | None) -> dict[str, str]:
    """The environment for Prefect clients: the API URL made explicit (``--api-url``, else
    the environment, else the active Prefect profile, where ``prefect config set`` and
    ``prefect cloud login`` put it), the key passed on."""
    env = dict(os.environ)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if not env.get("PREFECT_API_URL"):
        from prefect.settings import get_current_settings

        profile_url = get_current_settings().api.url
        if profile_url:
            env["PREFECT_API_URL"] = profile_url
    if not env.get("PREFECT_API_URL"):
        fail(
            "no Prefect API: pass --api-url (e.g. http://127.0.0.1:4200/api after "
            "`prefect server start`) or set PREFECT_API_URL"
        )
    return env


@contextlib.contextmanager
def clear_api_errors(url: str) -> Iterator[None]:
    """The API at ``url`` for the block's clients; its failures as one line that says why."""
    with temporary_settings({PREFECT_API_URL: url}):
        try:
            yield
        except httpx.TransportError as exc:  # nothing listens, DNS, TLS, timeout
            fail(
                f"{url}: no Prefect API answers there ({type(exc).__name__}); start one "
                "(prefect server start --host 127.0.0.1) or pass --api-url"
            )
        except httpx.HTTPStatusError as exc:  # something answers, but not as the API
            fail(
                f"{url}: answered HTTP {exc.response.status_code}, not as a Prefect API; does "
                "the URL end in /api, and for a server with auth or Prefect Cloud, are "
                "PREFECT_API_AUTH_STRING or PREFECT_API_KEY set?"
            )


def _schedule_key(deployment, schedule) -> tuple[str, str, str]:
    """A schedule's identity across a re-deploy (which gives it a new id): flow, deployment,
    then its slug, else its definition."""
    what = schedule.slug or schedule.schedule.model_dump_json()
    return (str(deployment.flow_id), deployment.name, what)


def schedule_states() -> dict[tuple[str, str, str], bool]:
    """Whether each deployment schedule is on, by (flow id, deployment, schedule)."""
    with get_client(sync_client=True) as client:
        return {
            _schedule_key(d, s): s.active for d in client.read_deployments() for s in d.schedules
        }


def restore_schedule_states(before: dict[tuple[str, str, str], bool]) -> list[str]:
    """Turn each schedule that the deploy switched back to its state from before: prefect.yaml's
    ``active: false`` is the default of a new deployment, not an order to stop a schedule
    someone turned on (``prefect deploy`` recreates schedules with the yaml's flag)."""
    restored = []
    with get_client(sync_client=True) as client:
        for d in client.read_deployments():
            for s in d.schedules:
                was = before.get(_schedule_key(d, s))
                if was is not None and was != s.active:
                    client.update_deployment_schedule(d.id, s.id, active=was)
                    restored.append(f"{d.name}: schedule {'on' if was else 'off'} as before")
    return restored


def deploy(names: list[str], env: dict[str, str]) -> None:
    """``prefect deploy`` for the named deployments of prefect.yaml (all when none); schedules
    keep the on/off state they had."""
    with clear_api_errors(env["PREFECT_API_URL"]):
        before = schedule_states()
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy"]
    cmd += [arg for name in names for arg in ("--name", name)] if names else ["--all"]
    done = subprocess.run(cmd, cwd=HERE, env=env, check=False)
    if done.returncode != 0:
        fail(f"prefect deploy failed (exit {done.returncode}); its output is above")
    with clear_api_errors(env["PREFECT_API_URL"]):
        for line in restore_schedule_states(before):
            print(line)


def worker_command(pool: str, limit: int | None, name: str | None, healthcheck: bool) -> list[str]:
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    cmd += ["--install-policy", "never"]  # the project's own install, never a runtime pip
    if limit:
        cmd += ["--limit", str(limit)]
    if name:
        cmd += ["--name", name]
    if healthcheck:
        cmd += ["--with-healthcheck"]
    return cmd


def run_worker(args: argparse.Namespace, env: dict[str, str]) -> None:
    """Replace this process with a Prefect worker (same PID: stop it by that PID)."""
    env.setdefault("LINKLM_PROJECT_DIR", str(HERE))
    cmd = worker_command(args.pool, args.limit, args.name, args.healthcheck)
    os.chdir(env["LINKLM_PROJECT_DIR"])
    os.execve(cmd[0], cmd, env)


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m deployments", description=__doc__.split("\n")[0])
    api_help = "Prefect API URL (default: $PREFECT_API_URL)"
    p.add_argument("--api-url", help=api_help)
    # --api-url after the command too (`up --api-url URL`); unset there, it keeps the above
    api = ArgumentParser(add_help=False)
    api.add_argument("--api-url", default=argparse.SUPPRESS, help=api_help)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("pools", help="create the work pools that are missing", parents=[api])
    for name, text in (("deploy", "register deployments"), ("up", "pools, then deployments")):
        cmd = sub.add_parser(name, help=text + " from prefect.yaml", parents=[api])
        cmd.add_argument("--name", action="append", default=[], help="a deployment (repeat)")
    w = sub.add_parser(
        "worker", help="start a process worker for a pool on this machine", parents=[api]
    )
    w.add_argument("--pool", default=pools.GPU.name, choices=[p.name for p in pools.POOLS])
    w.add_argument("--limit", type=int, default=None, help="concurrent flow runs (default: any)")
    w.add_argument("--name", default=None, help="worker name shown in the UI")
    w.add_argument("--healthcheck", action="store_true", help="serve /health on port 8080")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    env = api_environment(args.api_url)
    if args.command == "worker":
        run_worker(args, env)
    if args.command in ("pools", "up"):
        with clear_api_errors(env["PREFECT_API_URL"]):
            created = pools.ensure_pools()
        for name, status in created.items():
            print(f"work pool {name}: {status}")
    if args.command in ("deploy", "up"):
        deploy(args.name, env)
    return 0


if __name__ == "__main__":
    if not Path(PREFECT_FILE).is_file():
        fail(f"{PREFECT_FILE}: missing; run from a linklm checkout")
    run_cli(main)
