#!/usr/bin/env bash
# Create .venv and install the project into it; re-installs only when pyproject.toml changes.
# Usage: bash scripts/setup.sh [extras]   e.g. "dev" for the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
stamp=".venv/.linklm-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${spec}"
# uv resolves, installs and byte-compiles (on every core) in 70 s what pip takes 200 s for
# here; it reads none of pip's settings, so the indexes, links and certificates pip is set up
# with (pip.conf, PIP_* variables) are handed over. Anything uv cannot do falls back to pip.
pip_setting() { .venv/bin/python -m pip config get "global.$1" 2>/dev/null || true; }
install_with_uv() {
    .venv/bin/python -m pip install --disable-pip-version-check -q uv >/dev/null 2>&1 || return 1
    local args=(--python .venv/bin/python --index-strategy unsafe-best-match --compile-bytecode -q)
    local link url index cert
    for link in ${PIP_FIND_LINKS:-} $(pip_setting find-links); do args+=(--find-links "$link"); done
    for url in ${PIP_EXTRA_INDEX_URL:-} $(pip_setting extra-index-url); do
        args+=(--extra-index-url "$url")
    done
    index="${PIP_INDEX_URL:-$(pip_setting index-url)}"
    [ -n "$index" ] && args+=(--index-url "$index")
    cert="${PIP_CERT:-$(pip_setting cert)}"
    [ -n "$cert" ] && export SSL_CERT_FILE="$cert"
    .venv/bin/uv pip install "${args[@]}" "$@"
}
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
    echo "setup: installing ${spec} into .venv (first run takes a few minutes)" >&2
    .venv/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
    # torch is pinned to 2.13.0 in pyproject.toml; it is named here too so nothing pulls
    # another build
    if ! install_with_uv "torch==2.13.0" -e "$spec"; then
        echo "setup: uv could not install ${spec}; installing with pip" >&2
        # not --no-compile: with PYTHONDONTWRITEBYTECODE=1 (set on these machines) every
        # process would compile every module it imports, again (CI went from 17 to 30+ min)
        .venv/bin/python -m pip install --disable-pip-version-check -q "torch==2.13.0"
        .venv/bin/python -m pip install --disable-pip-version-check -q -e "$spec"
    fi
    echo "$want" >> "$stamp"
fi
