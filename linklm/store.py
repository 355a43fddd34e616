"""The store: one URL that every worker reads and writes, the source of truth for results.

The deployment is a Prefect server, a CPU pool and GPU workers that come and go; they
share nothing but the Prefect API and one store URL (``LINKLM_ARTIFACTS_URL`` or a config's
``artifacts_url``: ``s3://``, ``gs://``, a mounted Drive folder, a local path, anything
fsspec opens). A worker's disk is a cache. The store holds::

    runs/<run_name>/            finished run folders (model/ or adapter/, run.json, card),
                                and checkpoints/ while a run that asked for it trains
    registry/registry.json      the champion registry (and its lock while a decision is made)
    <flow>/<flow run name>/     reports of evaluations, sweeps, learning curves, datasets

A folder is published file by file with ``linklm-artifacts.json`` (every file's size and
SHA256) written last, so a reader that finds the index finds a
complete copy. A run read from the store is downloaded once into ``$LINKLM_HOME/store/``,
into a folder named by the SHA256 of its index, each file checked against the index; the
model loader checks run.json's hashes again, as for any run.

Without a store URL nothing here is used: runs and the registry stay on the local disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec

from linklm import atomic
from linklm.errors import StorageError

log = logging.getLogger(__name__)

ENV_VAR = "LINKLM_ARTIFACTS_URL"
INDEX_FILE = "linklm-artifacts.json"
DEFAULT_EXCLUDE = ("checkpoints",)
NO_COPY = ""  # artifacts_url of a subflow whose folder its parent flow publishes (or need not)

RUNS = "runs"
REGISTRY = "registry/registry.json"
CACHE = "store"
LOCK_SUFFIX = ".lock"
LOCK_TIMEOUT_S = 60.0
# a lock older than this was left by a process that died holding it (a decision takes
# seconds): it is broken, with a warning
LOCK_STALE_S = 600.0
# stores whose "create only if absent" is atomic: O_EXCL locally, If-None-Match on S3
ATOMIC_CREATE = {"file", "local", "s3", "s3a"}


def artifacts_url(configured: str | None = None) -> str | None:
    """The store: the configured URL, else the worker's ``LINKLM_ARTIFACTS_URL``, else None
    (everything stays on this machine)."""
    value = configured if configured is not None else os.environ.get(ENV_VAR, "")
    return value.strip() or None


def join(url: str, *parts: str) -> str:
    """``url`` with path parts appended (URLs always use ``/``)."""
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts if p)])


def link(url: str) -> str:
    """A URL a browser or the Prefect UI can show: plain paths become ``file://`` URIs."""
    return url if "://" in url else Path(url).expanduser().resolve().as_uri()


def file_link(path: str | Path, root: str | Path, published: str | None) -> str:
    """The link the UI shows for a file of folder ``root``: its copy in the store when
    ``root`` was published to ``published``, else the file on this machine."""
    if published:
        rel = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
        return join(published, rel)
    return link(str(path))


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


def _index_of(root: str) -> str:
    """The index's path in a published folder's filesystem path ``root``."""
    return f"{root.rstrip('/')}/{INDEX_FILE}"


def is_published(location: str) -> bool:
    """True when a complete copy is at ``location`` (its index is written last)."""
    fs, root = filesystem(location)
    return fs.exists(_index_of(root))


def publish_folder(src: Path, dest_url: str, exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> dict:
    """Copy ``src`` to ``dest_url`` file by file, then write the index; returns the index."""
    src = Path(src)
    if not src.is_dir():
        raise StorageError(f"{src}: no such folder to publish")
    fs, root = filesystem(dest_url)
    # an index is only ever beside the files it lists: a copy being replaced has none
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(_index_of(root))
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
    with fs.open(_index_of(root), "w") as fh:
        fh.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def read_index(dest_url: str) -> dict:
    """The index of a published folder; a StorageError when the copy is absent or unfinished."""
    fs, root = filesystem(dest_url)
    path = _index_of(root)
    if not fs.exists(path):
        raise StorageError(f"{dest_url}: no {INDEX_FILE} (nothing published there, or unfinished)")
    with fs.open(path, "r") as fh:
        return json.load(fh)


def publish_file(path: Path, dest_url: str) -> str:
    """Copy one file (the registry, a report) to ``dest_url``; returns ``dest_url``."""
    fs, target = filesystem(dest_url)
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(path), target)
    return dest_url


def home() -> Path:
    """Where this machine keeps models and caches (``$LINKLM_HOME``, default ~/.cache/linklm)."""
    return Path(os.environ.get("LINKLM_HOME", Path.home() / ".cache" / "linklm"))


def is_url(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def run_url(store: str, run_name: str) -> str:
    return join(store, RUNS, run_name)


def registry_url(store: str) -> str:
    return join(store, REGISTRY)


def filesystem(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        fs, path = fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"{location}: cannot open this store ({exc})") from None
    # another machine may have written since: an object store's listings are not cached
    fs.invalidate_cache()
    return fs, path


def read_json(location: str) -> dict | list | None:
    """A JSON file of the store, or None when it is not there."""
    fs, path = filesystem(location)
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StorageError(f"{location}: not valid JSON ({exc})") from None


def write_json(location: str, data: object) -> None:
    """Replace a JSON file of the store whole: renamed into place on a disk, one PUT (which
    an object store applies whole or not at all) elsewhere."""
    if not is_url(location):
        atomic.write_json(location, data)
        return
    fs, path = filesystem(location)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _create(fs: fsspec.AbstractFileSystem, path: str, body: bytes) -> None:
    """Write ``path`` only if it does not exist: FileExistsError otherwise."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & {"file", "local"}:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        return
    if not protocols & ATOMIC_CREATE:
        log.warning(
            "%s: this store's create-if-absent is not known to be atomic; two machines "
            "deciding at the same instant might both take the lock",
            path,
        )
    fs.pipe_file(path, body, mode="create")


@contextlib.contextmanager
def exclusive(
    location: str, what: str, timeout_s: float = LOCK_TIMEOUT_S, stale_s: float = LOCK_STALE_S
) -> Iterator[None]:
    """Hold ``<location>.lock``, a lock every machine that reaches the store shares: it is
    created only if absent (atomically on a disk and on S3) and removed on exit."""
    fs, path = filesystem(location + LOCK_SUFFIX)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + timeout_s
    while True:
        body = json.dumps({"holder": holder, "since": time.time()}).encode()
        try:
            _create(fs, path, body)
            break
        except FileExistsError:
            held = _lock_holder(fs, path)
            age = time.time() - float(held.get("since", time.time()))
            if age > stale_s:
                log.warning("%s: lock of %s is %.0f s old, broken", path, held.get("holder"), age)
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(path)
                continue
            if time.monotonic() > deadline:
                raise StorageError(
                    f"{location}: {held.get('holder', 'another process')} has held the lock "
                    f"for {age:.0f} s ({what}); try again when it has finished, or remove "
                    f"{location + LOCK_SUFFIX} if that process is gone"
                ) from None
            time.sleep(0.1 + random.random() * 0.2)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)


def _lock_holder(fs: fsspec.AbstractFileSystem, path: str) -> dict:
    try:
        held = json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError):  # released meanwhile, or being written
        return {}
    return held if isinstance(held, dict) else {}


def index_key(index: dict) -> str:
    """The SHA256 of a published folder's content (every file's path and SHA256)."""
    lines = sorted(f"{r['path']} {r['sha256']}" for r in index["files"])
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def has_run(store: str, run_name: str) -> bool:
    """True when the store holds a complete copy of the run (its index is written last)."""
    return is_published(run_url(store, run_name))


def fetch_folder(location: str, name: str) -> Path:
    """A published folder in this machine's cache, downloaded once and checked file by file
    against its index; the cache folder is named by the content's SHA256, so a changed copy
    in the store is a new download, never a stale hit."""
    index = read_index(location)
    target = home() / CACHE / f"{name}-{index_key(index)[:16]}"
    if (target / INDEX_FILE).is_file():
        return target
    return download_folder(location, target, index)


def download_folder(location: str, target: Path, index: dict | None = None) -> Path:
    """A published folder downloaded to ``target`` (which appears whole or not at all),
    every file checked against the SHA256 its index records."""
    index = index or read_index(location)
    fs, root = filesystem(location)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_dir(target) as tmp:
        for record in index["files"]:
            local = tmp / record["path"]
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root.rstrip('/')}/{record['path']}", str(local))
            if atomic.sha256_file(local) != record["sha256"]:
                raise StorageError(
                    f"{location}/{record['path']}: its SHA256 is not the one its index "
                    f"records; the copy in the store is damaged, publish the run again"
                )
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True))
    log.info("fetched %s (%d files) into %s", location, len(index["files"]), target)
    return target


def latest_published(location: str, prefix: str) -> tuple[int, str] | None:
    """(number, URL) of the highest-numbered complete folder ``<prefix>N`` under
    ``location`` (checkpoint-200, ...), or None."""
    fs, root = filesystem(location)
    try:
        entries = fs.ls(root, detail=False)
    except FileNotFoundError:
        return None
    numbered = []
    for entry in entries:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            numbered.append((int(name[len(prefix) :]), join(location, name)))
    for number, url in sorted(numbered, reverse=True):
        if is_published(url):
            return number, url
    return None


def remove(location: str) -> None:
    """Remove a folder of the store (the index first, so no reader takes it as complete)."""
    fs, root = filesystem(location)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(_index_of(root))
    with contextlib.suppress(FileNotFoundError):
        fs.rm(root, recursive=True)


def fetch_run(store: str, run_name: str) -> Path:
    """The run folder ``runs/<run_name>`` of the store, in this machine's cache."""
    return fetch_folder(run_url(store, run_name), run_name)


def local_model(name: str, configured_store: str | None = None) -> str:
    """A run given as a store URL, or by a name that is no local path while the store holds
    a run of that name, as its folder in this machine's cache; anything else as given."""
    if is_url(name):
        with contextlib.suppress(StorageError, FileNotFoundError):
            read_index(name)
            return str(fetch_folder(name, name.rstrip("/").rsplit("/", 1)[-1]))
        return name
    store = artifacts_url(configured_store)
    if store is None or Path(name).expanduser().exists() or "/" in name or not name.strip():
        return name
    if has_run(store, name):
        return str(fetch_run(store, name))
    return name


# --- who is training a run: a lease in the store -------------------------------------------

LEASE_FILE = "lease.json"
LEASE_ENV = "LINKLM_LEASE_S"
LEASE_S = 120.0  # a lease not renewed for this long belongs to a worker that died


def lease_seconds() -> float:
    """How long a lease lasts without renewal ($LINKLM_LEASE_S, default 120 s)."""
    return float(os.environ.get(LEASE_ENV, LEASE_S))


class Lease:
    """The claim of one process on a run in the store (``runs/<run>/lease.json``), renewed
    by a thread every third of its length while the run trains. A worker that dies (a
    SIGKILL, a Colab disconnect) stops renewing it; once it is older than its length, the
    next start of the run takes it over and says whose it was. Two live workers never train
    one run: the second is refused, naming the first."""

    def __init__(self, run_location: str, holder: dict, seconds: float | None = None):
        self.location = join(run_location, LEASE_FILE)
        self.holder = holder | {"host": socket.gethostname(), "pid": os.getpid()}
        self.seconds = seconds or lease_seconds()
        self.previous: dict | None = None  # the dead holder taken over, if any
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, wait_s: float | None = None) -> Lease:
        """Take the lease: free, stale (its holder died; waits up to ``wait_s`` for a
        fresh one to go stale), or refused with a StorageError naming the holder."""
        deadline = time.monotonic() + (self.seconds * 1.5 if wait_s is None else wait_s)
        while True:
            with exclusive(self.location, "taking a run's lease"):
                held = read_json(self.location)
                age = time.time() - float(held.get("renewed", 0)) if held else None
                if held is None or age > self.seconds:
                    self.previous = held
                    self._write()
                    break
            if time.monotonic() > deadline:
                raise StorageError(
                    f"{self.location}: the run is training on {held.get('host')} (pid "
                    f"{held.get('pid')}, flow run {held.get('flow_run_id')}), renewed {age:.0f} s "
                    f"ago; wait for it, or for its lease to lapse ({self.seconds:.0f} s) if "
                    "that worker is gone"
                )
            time.sleep(min(2.0, self.seconds / 4))
        self._thread = threading.Thread(target=self._renew, daemon=True, name="linklm-lease")
        self._thread.start()
        return self

    def _write(self) -> None:
        write_json(self.location, self.holder | {"renewed": time.time()})

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self._write()
            except Exception as exc:  # noqa: BLE001 (a renewal must never kill the training)
                log.warning("%s: lease not renewed (%s)", self.location, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(FileNotFoundError, StorageError):
            fs, path = filesystem(self.location)
            fs.rm_file(path)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
