"""Requests that arrive together share one model call.

A model answers 64 links in one call in little more time than one link (the batched
``Predictor``), so under load a service that answers each request alone wastes most of its
time. ``Batcher`` queues each request's rows; one loop takes whatever is queued (up to
``max_batch`` links, waiting at most ``window_s`` for more), answers it in one call on a
worker thread, and hands each request its own rows back. An idle service answers a lone
request at once, plus at most the window; a busy one batches the requests that queued while
the model was answering the last batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from linklm.errors import LinkLMError


class Busy(LinkLMError):
    """More requests are waiting than the service queues: try again shortly."""


@dataclass
class BatchStats:
    """What the batcher did: calls, links per call (so a load test can show the batching)."""

    calls: int = 0
    links: int = 0
    requests: int = 0
    largest: int = 0
    seconds: float = 0.0

    def record(self, links: int, requests: int, seconds: float) -> None:
        self.calls += 1
        self.links += links
        self.requests += requests
        self.largest = max(self.largest, links)
        self.seconds += seconds

    def summary(self) -> dict:
        return {
            "model_calls": self.calls,
            "links": self.links,
            "requests": self.requests,
            "mean_links_per_call": round(self.links / self.calls, 2) if self.calls else None,
            "largest_call": self.largest,
            "model_seconds": round(self.seconds, 3),
        }


class Batcher:
    """Answer rows with ``answer`` (a typed frame in, one answer row per row out, same
    order), batching concurrent requests; run ``run()`` as a task of the server's loop."""

    def __init__(
        self,
        answer: Callable[[pl.DataFrame], pl.DataFrame],
        window_s: float = 0.002,
        max_batch: int = 64,
        max_queue: int = 1000,
    ):
        self._answer = answer
        self.window_s, self.max_batch, self.max_queue = window_s, max_batch, max_queue
        self.queue: asyncio.Queue[tuple[pl.DataFrame, asyncio.Future]] = asyncio.Queue()
        self._held: tuple[pl.DataFrame, asyncio.Future] | None = None  # starts the next batch
        self.stats = BatchStats()

    async def answer(self, rows: pl.DataFrame) -> pl.DataFrame:
        """This request's answers, from whichever batch it joined."""
        if self.queue.qsize() >= self.max_queue:
            raise Busy(
                f"{self.queue.qsize()} requests are waiting already (max_queue "
                f"{self.max_queue}); try again shortly"
            )
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((rows, future))
        return await future

    async def _gather(self) -> list[tuple[pl.DataFrame, asyncio.Future]]:
        """The next batch: the oldest request, then what else is queued or arrives within
        the window, up to ``max_batch`` links (a request is never split)."""
        first, self._held = self._held, None
        batch = [first if first is not None else await self.queue.get()]
        links = batch[0][0].height
        deadline = time.perf_counter() + self.window_s
        while links < self.max_batch:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
            if links + item[0].height > self.max_batch:
                self._held = item  # too big to join: it starts the next batch
                break
            batch.append(item)
            links += item[0].height
        return batch

    async def run(self) -> None:
        """Forever: gather a batch, answer it on a worker thread, split the answers back."""
        while True:
            batch = await self._gather()
            live = [(rows, future) for rows, future in batch if not future.cancelled()]
            if not live:
                continue
            started = time.perf_counter()
            try:
                frames = [rows for rows, _ in live]
                combined = (
                    frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
                )
                answered = await asyncio.to_thread(self._answer, combined)
            except Exception as exc:  # every waiting request gets the error, the loop goes on
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.stats.record(combined.height, len(live), time.perf_counter() - started)
            offset = 0
            for rows, future in live:
                if not future.done():
                    future.set_result(answered.slice(offset, rows.height))
                offset += rows.height
