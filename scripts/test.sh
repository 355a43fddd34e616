#!/usr/bin/env bash
# The test command: set up .venv with the dev tools, lint, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# tests/test_report.py opens a report in real headless Chromium (Debian's package, ~20 s).
if [ ! -x /usr/bin/chromium ]; then
    echo "test: installing Debian chromium for the report rendering test" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# Two pytest workers (one per core here, one torch thread each: tests/conftest.py): most
# tests wait on subprocesses, servers and start-ups, so one worker leaves a core idle
# (690 s alone, 249-284 s with two, measured). --dist loadfile keeps a module's fixtures
# (trained runs, datasets) in one worker; --no-loadscope-reorder keeps the order of
# tests/conftest.py (longest modules first), where xdist would start the modules with the
# most tests first and the 7-minute deployment test last (1,205 s in all, measured).
workers="${LINKLM_TEST_WORKERS:-2}"
rc=0
.venv/bin/python -m pytest -q --timeout=900 -n "$workers" --dist loadfile --no-loadscope-reorder --durations=25 "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: the suite is broken (exit 5)" >&2
    exit 1
fi
exit "$rc"
