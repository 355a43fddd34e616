"""Stopping cleanly on SIGTERM and Ctrl-C: within seconds, no process and no half-written
file left behind, and one line saying how the run ended.

Without this, SIGTERM (``kill``, ``timeout``, systemd, a Prefect cancel) ended the process
at once but left its temporary Prefect server running, orphaned and listening; Ctrl-C in a
terminal (SIGINT to the whole process group, the server included) marked the flow crashed,
then hung for minutes while Prefect's events worker retried against the server that had
just stopped, ignoring further Ctrl-C.

On the first signal the run unwinds as usual, so the flow run is marked crashed and every
``finally`` runs; after ``GRACE_S`` seconds, or on a second signal, or once the unwinding
reaches the CLI, the process removes the temporary files still being written
(``atomic.remove_unfinished``), stops the temporary Prefect server it started, says how it
ended, and exits with 128 + the signal number without waiting on Prefect's exit-time
queues. What finished (chunks, checkpoints, earlier outputs) is kept for the next run.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import NoReturn

from linklm import atomic

GRACE_S = 10.0  # for the flow run to be marked crashed before the process exits anyway
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """Raised in the main thread by SIGTERM (SIGINT raises KeyboardInterrupt), so the run
    unwinds: a BaseException, like those, so no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


_exiting = threading.Lock()


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Handle SIGTERM and SIGINT this way while the block runs (main thread only; elsewhere
    nothing changes), then put back what was there (a CLI called in-process, by a test or a
    notebook, leaves its caller's handlers as they were).

    Prefect's engine swaps in its own SIGTERM handler during a flow run (and calls this one
    once the run is marked crashed), so the deadline does not rest on a Python handler:
    every signal also writes its number to a pipe (``signal.set_wakeup_fd``, below the
    handlers) that a watcher thread reads."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _on_signal) for signum in SIGNALS}
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_watch, args=(read_end,), name="stop-watcher", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(write_end)  # the watcher reads the end of the pipe and returns


def _on_signal(signum: int, frame) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Stopped(signum)


def _watch(read_end: int) -> None:
    """After a first signal, exit once the flow run had its chance to be marked crashed:
    at ``GRACE_S``, at once when the temporary server is gone already (Ctrl-C reaches the
    whole process group, the server too: nothing can be reported), or on a second signal."""
    first = None
    deadline = None
    while True:
        ready, _, _ = select.select([read_end], [], [], 0.2 if first else None)
        if ready:
            data = os.read(read_end, 64)
            if not data:  # the block ended: nothing more to watch
                os.close(read_end)
                return
            for signum in (b for b in data if b in SIGNALS):
                if first is not None:  # a second signal
                    exit_now(signum)
                first, deadline = signum, time.monotonic() + GRACE_S
        if first is not None and (time.monotonic() > deadline or _server_gone()):
            exit_now(first)


def _servers():
    try:
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:  # pragma: no cover (Prefect is a dependency)
        return []
    return list(SubprocessASGIServer._instances.values())


def _server_gone() -> bool:
    """True when this process had started a temporary server and it has exited."""
    processes = [getattr(s, "server_process", None) for s in _servers()]
    return any(p is not None and p.poll() is not None for p in processes)


def stop_temporary_servers() -> None:
    """Stop the temporary Prefect server this process started (with no PREFECT_API_URL),
    and reap it: SIGTERM, then SIGKILL after 3 s."""
    for server in _servers():
        process = getattr(server, "server_process", None)
        if process is None:
            continue
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(3)
        server.running = False


def exit_now(signum: int) -> NoReturn:
    """Remove unfinished files, stop the temporary server, say how the run ended, exit."""
    if not _exiting.acquire(blocking=False):  # another thread is exiting already
        threading.Event().wait()
    removed = atomic.remove_unfinished()
    try:
        stop_temporary_servers()
    finally:
        name = signal.Signals(signum).name
        note = f"; {len(removed)} unfinished file(s) removed" if removed else ""
        print(
            f"stopped by {name}: nothing half-written is left{note}, and what finished is "
            "kept; run the same command again to continue (a training: with --resume)",
            file=sys.stderr,
        )
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(128 + signum)
