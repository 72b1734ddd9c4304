"""The server's work queue: requests wait in one FIFO queue and a single worker thread runs them one at
a time on the one model in memory.

Owns: `Job` (a request's work, its cancel flag, and the events it sends to the client's coroutine),
`JobQueue` (FIFO with a maximum length, the worker thread, cancellation, queue positions, a pause for
tests and maintenance). A job's work runs in the worker thread; its events cross to the event loop with
`call_soon_threadsafe`. A queued job that is cancelled leaves the queue; a running one stops at its next
decoding step, where its step callback calls `Job.check` (which raises `Cancelled`). Does not own HTTP
(app.py) or what a job computes (sample/run.py's `produce`).
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections import deque
from typing import Callable

log = logging.getLogger("trimdm.serve")


class QueueFull(Exception):
    """The queue holds its maximum of waiting jobs; `retry_after` is a guess in seconds of when a place frees."""

    def __init__(self, retry_after: int, max_queued: int):
        super().__init__(f"the queue is full ({max_queued} requests waiting); retry in about {retry_after} s")
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised inside a running job by `Job.check` once its client has gone."""


class Job:
    """One request: `work(job)` runs in the worker thread and returns the final event's data (a dict);
    `events` (an asyncio.Queue of (event, data)) is read by the request's coroutine on `loop`."""

    def __init__(self, work: Callable[["Job"], dict], loop: asyncio.AbstractEventLoop, stream: bool = False):
        self.id = uuid.uuid4().hex[:12]
        self.work, self.loop, self.stream = work, loop, stream
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.state = "queued"  # queued | running | done | error | cancelled

    def emit(self, event: str, data: dict) -> None:
        """Send an event to the client's coroutine (from any thread); dropped once the loop is closed."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (event, data))
        except RuntimeError:  # the event loop has shut down
            pass

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled


class JobQueue:
    """FIFO of jobs run one at a time by one worker thread; at most `max_queued` wait (running excluded)."""

    def __init__(self, max_queued: int = 16):
        if max_queued < 1:
            raise ValueError(f"--queue {max_queued}: at least one request must be able to wait")
        self.max_queued = max_queued
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._paused = False
        self._stopping = False
        self.running: Job | None = None
        self.counts = {"done": 0, "error": 0, "cancelled": 0}
        self.seconds_per_job = 1.0  # running mean of job times, for Retry-After
        self._thread: threading.Thread | None = None

    # -- the worker -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker (once; `submit` starts it too, so an app run without its lifespan still works)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="trimdm-serve-worker", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the running job, drop the waiting ones, end the worker."""
        with self._cond:
            self._stopping = True
            for job in self._waiting:
                job.state = "cancelled"
                job.emit("error", {"error": "the server is shutting down", "status": 503})
            self._waiting.clear()
            if self.running is not None:
                self.running.cancelled.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _next(self) -> Job | None:
        with self._cond:
            while not self._stopping and (self._paused or not self._waiting):
                self._cond.wait()
            if self._stopping:
                return None
            job = self.running = self._waiting.popleft()
            job.state = "running"
            self._announce()
            return job

    def _work(self) -> None:
        while (job := self._next()) is not None:
            job.emit("started", {"id": job.id})
            t0 = time.perf_counter()
            try:
                event, data = "done", job.work(job)
            except Cancelled:
                event, data = "cancelled", {"error": "cancelled: the client went away"}
            except ValueError as e:  # a bad request found while running (a span, a length the rows cannot hold)
                event, data = "error", {"error": str(e), "status": 400}
            except Exception as e:  # a bug: logged with its traceback here, never sent to the client
                log.exception("job %s failed", job.id)
                event, data = "error", {"error": f"internal error ({type(e).__name__}); see the server's log",
                                        "status": 500}
            seconds = time.perf_counter() - t0
            with self._cond:
                self.running = None
                job.state = event
                self.counts[event] += 1
                if event == "done":
                    self.seconds_per_job = 0.8 * self.seconds_per_job + 0.2 * seconds
            job.emit(event, data)

    # -- the queue --------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue a job (its first event tells its place), or raise QueueFull."""
        with self._cond:
            if self._stopping:
                raise QueueFull(1, self.max_queued)
            if len(self._waiting) >= self.max_queued:
                ahead = len(self._waiting) + (self.running is not None)
                raise QueueFull(max(1, min(3600, math.ceil(self.seconds_per_job * ahead))), self.max_queued)
            self._waiting.append(job)
            job.emit("queued", self._place(len(self._waiting) - 1))
            self._cond.notify_all()
        self.start()

    def cancel(self, job: Job) -> None:
        """The client has gone: a waiting job leaves the queue, a running one stops at its next step."""
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                job.state = "cancelled"
                self.counts["cancelled"] += 1
                self._announce()
            elif job is self.running:
                job.cancelled.set()

    def _place(self, index: int) -> dict:
        return {"position": index + 1, "ahead": index + (self.running is not None), "queued": len(self._waiting)}

    def _announce(self) -> None:
        """Tell every waiting job its place (the caller holds the lock)."""
        for i, job in enumerate(self._waiting):
            job.emit("queued", self._place(i))

    def pause(self) -> None:
        """Let no new job start (the running one finishes); jobs keep queueing up to the maximum."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def status(self) -> dict:
        with self._cond:
            return {"queued": len(self._waiting), "running": self.running is not None, "max_queue": self.max_queued,
                    "paused": self._paused, **self.counts}
