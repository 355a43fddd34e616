"""Where finished results are copied so people who cannot read the worker's disk can reach them.

A flow writes into its local ``out_dir`` as always; when an artifact location is set (the
config's ``artifacts_url`` or the ``LINKLM_ARTIFACTS_URL`` environment variable of the
worker), the finished folder is copied there with fsspec: a plain folder (a mounted Google
Drive, an NFS share), ``file://``, or any object store fsspec has a driver for (``s3://``
with s3fs, ``gs://`` with gcsfs, ...). Nothing is set by default, so nothing is copied.

The copy writes ``linklm-artifacts.json`` (every file with its size and SHA256) last: a
reader that finds it knows the copy is complete and can verify it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import fsspec

from linklm import atomic
from linklm.errors import LinkLMError

ENV_VAR = "LINKLM_ARTIFACTS_URL"
INDEX_FILE = "linklm-artifacts.json"
DEFAULT_EXCLUDE = ("checkpoints",)
NO_COPY = ""  # artifacts_url of a subflow whose folder its parent flow publishes (or need not)


class StorageError(LinkLMError):
    """The artifact location cannot be written."""


def artifacts_url(configured: str | None = None) -> str | None:
    """The configured location, else the worker's environment, else None (no copy)."""
    value = configured if configured is not None else os.environ.get(ENV_VAR, "")
    return value.strip() or None


def join(url: str, *parts: str) -> str:
    """``url`` with path parts appended (URLs always use ``/``)."""
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts if p)])


def link(url: str) -> str:
    """A URL a browser or the Prefect UI can show: plain paths become ``file://`` URIs."""
    return url if "://" in url else Path(url).expanduser().resolve().as_uri()


def files_to_copy(src: Path, exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> list[Path]:
    """Every file under ``src`` except excluded folders, locks and half-written temp files."""
    out = []
    for path in sorted(Path(src).rglob("*")):
        rel = path.relative_to(src)
        if not path.is_file() or any(part in exclude for part in rel.parts[:-1]):
            continue
        if path.name.endswith(".lock") or atomic.TMP_MARK in path.name:
            continue
        out.append(path)
    return out


def publish_folder(src: Path, dest_url: str, exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> dict:
    """Copy ``src`` to ``dest_url`` file by file, then write the index; returns the index."""
    src = Path(src)
    if not src.is_dir():
        raise StorageError(f"{src}: no such folder to publish")
    try:
        fs, root = fsspec.core.url_to_fs(dest_url)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"{dest_url}: cannot open this artifact location ({exc})") from None
    records = []
    for path in files_to_copy(src, exclude):
        rel = path.relative_to(src).as_posix()
        target = f"{root.rstrip('/')}/{rel}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(path), target)
        records.append(
            {"path": rel, "bytes": path.stat().st_size, "sha256": atomic.sha256_file(path)}
        )
    index = {
        "source": str(src.resolve()),
        "url": dest_url,
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": records,
        "bytes": sum(r["bytes"] for r in records),
    }
    fs.makedirs(root, exist_ok=True)
    with fs.open(f"{root.rstrip('/')}/{INDEX_FILE}", "w") as fh:
        fh.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def read_index(dest_url: str) -> dict:
    """The index of a published folder; a StorageError when the copy is absent or unfinished."""
    fs, root = fsspec.core.url_to_fs(dest_url)
    path = f"{root.rstrip('/')}/{INDEX_FILE}"
    if not fs.exists(path):
        raise StorageError(f"{dest_url}: no {INDEX_FILE} (nothing published there, or unfinished)")
    with fs.open(path, "r") as fh:
        return json.load(fh)


def publish_file(path: Path, dest_url: str) -> str:
    """Copy one file (the registry, a report) to ``dest_url``; returns ``dest_url``."""
    try:
        fs, target = fsspec.core.url_to_fs(dest_url)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"{dest_url}: cannot open this artifact location ({exc})") from None
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(path), target)
    return dest_url
