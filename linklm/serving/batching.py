"""Requests that arrive together share one model call.

Checking and answering 32 links in one call costs about what one link costs (the checks'
fixed cost is about 75 ms a call, the model's small per link), so under load a service that
answers each request alone spends most of its time on that fixed cost. ``Batcher`` queues
each request's rows; one loop takes whatever is queued (up to ``max_batch`` links, waiting
at most ``window_s`` for more), hands them to ``process`` in one call on a worker thread,
and gives each request its own result back. An idle service answers a lone
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
    """Run ``process`` (every queued request's frame in, one result per request out, in
    order) on batches of concurrent requests; run ``run()`` as a task of the server's loop."""

    def __init__(
        self,
        process: Callable[[list[pl.DataFrame]], list],
        window_s: float = 0.002,
        max_batch: int = 64,
        max_queue: int = 1000,
    ):
        self._process = process
        self.window_s, self.max_batch, self.max_queue = window_s, max_batch, max_queue
        self.queue: asyncio.Queue[tuple[pl.DataFrame, asyncio.Future]] = asyncio.Queue()
        self._held: tuple[pl.DataFrame, asyncio.Future] | None = None  # starts the next batch
        self.stats = BatchStats()

    async def submit(self, rows: pl.DataFrame):
        """This request's result, from whichever batch it joined."""
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
        """Forever: gather a batch, process it on a worker thread, hand out the results."""
        while True:
            batch = await self._gather()
            live = [(rows, future) for rows, future in batch if not future.cancelled()]
            if not live:
                continue
            started = time.perf_counter()
            frames = [rows for rows, _ in live]
            try:
                results = await asyncio.to_thread(self._process, frames)
            except Exception as exc:  # every waiting request gets the error, the loop goes on
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            links = sum(frame.height for frame in frames)
            self.stats.record(links, len(live), time.perf_counter() - started)
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)
