"""The job queue: one worker thread runs the model; requests wait in a bounded queue.

- full queue -> `QueueFull` (the routes answer 503 with Retry-After), never an unbounded pile-up;
- interrupt stops the running job before its next network block (within about a second at any
  admitted size) and keeps the images reached so far (state "interrupted");
- cancel (an interrupted queued job, a client that went away, a `/jobs` job nobody polled for
  `abandon_after` seconds, shutdown) ends the job with state "cancelled" and no result; a queued
  job leaves the queue at once;
- finished jobs are kept for `/jobs/{id}` up to `keep` of them (memory stays bounded).
"""

from __future__ import annotations

import collections
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlnet.web.engine import Cancelled, Interrupted

FINISHED = ("done", "failed", "interrupted", "cancelled")


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(f"the queue is full; retry in about {retry_after} s")


class Closed(Exception):
    """The server is shutting down: no new job is taken."""


@dataclass
class Job:
    kind: str  # txt2img | img2img | detect
    request: Any
    polled: bool = False  # submitted through /jobs: abandoned when nobody asks for it
    owner: str | None = None  # the --api-auth user who sent it; only they see it (None: no auth)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: str = "queued"
    step: int = 0
    total: int = 0
    result: Any = None
    error: BaseException | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    last_seen: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: str | None = None  # why the job was cancelled (no result wanted), else None

    @property
    def progress(self) -> float:
        """The fraction of steps run (1 when done; an interrupted job's real fraction)."""
        if self.state == "done":
            return 1.0
        return self.step / self.total if self.total else 0.0


class JobQueue:
    """`run(job, on_step)` does the work of one job in the worker thread and returns its result;
    `on_step(done, total)` raises Interrupted once the job is stopped."""

    def __init__(self, run: Callable, size: int = 8, keep: int = 64, abandon_after: float = 30.0,
                 max_seconds: float = math.inf):
        self.run, self.size, self.keep, self.abandon_after = run, size, keep, abandon_after
        self.max_seconds = max_seconds  # a job running longer is stopped (its admission estimate was low)
        self._waiting: collections.deque[Job] = collections.deque()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self.current: Job | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ clients

    def submit(self, kind: str, request, polled: bool = False, total: int = 0, owner: str | None = None) -> Job:
        """Queue a job; `total`: its steps, known before it starts; `owner`: the user who sent it."""
        with self._lock:
            if self._closing:
                raise Closed("the server is shutting down")
            if len(self._waiting) >= self.size:
                raise QueueFull(self.retry_after())
            job = Job(kind, request, polled, owner=owner, total=total)
            self._waiting.append(job)
            self._jobs[job.id] = job
            self._trim()
            self._wake.notify()
        return job

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job if `owner` sent it (another user's job is as unknown as one that never was)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            return None
        job.last_seen = time.monotonic()
        return job

    def position(self, job: Job) -> int:
        """How many jobs run before this one (0: it is running or finished)."""
        with self._lock:
            return self._waiting.index(job) + 1 if job in self._waiting else 0

    def cancel(self, job: Job, reason: str = "cancelled") -> None:
        """End a job without a result: a queued one at once, a running one before its next block."""
        with self._lock:
            if job.state == "queued":
                self._waiting.remove(job)
                job.cancelled = reason
                self._finish(job, "cancelled")
            elif job.state == "running":
                job.cancelled = reason
                job.stop.set()

    def interrupt(self, job: Job) -> None:
        """Stop a job: a queued one is cancelled at once; a running one stops before its next block
        and answers with the images reached so far."""
        with self._lock:
            if job.state == "queued":
                self.cancel(job, "interrupted before it started")
            else:
                job.stop.set()

    def interrupt_current(self, owner: str | None = None) -> Job | None:
        """Stops the running job if `owner` sent it."""
        job = self.current
        if job is None or job.owner != owner:
            return None
        job.stop.set()
        return job

    def retry_after(self) -> int:
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return max(1, math.ceil(mean * (len(self._waiting) + 1)))

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    # ------------------------------------------------------------------ worker

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="controlnet-worker", daemon=True)
        self._thread.start()

    def shut(self) -> None:
        """Shutdown begins: no new jobs, the queued ones cancelled, the running one stopped."""
        with self._lock:
            self._closing = True
            for job in list(self._waiting):
                self.cancel(job, "the server is shutting down")
            if self.current is not None:
                self.cancel(self.current, "the server is shutting down")
            self._wake.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        self.shut()
        if self._thread is not None:
            self._thread.join(timeout)

    def _next(self) -> Job | None:
        """The next job to run, marked running (None: shutting down)."""
        with self._lock:
            while not self._waiting and not self._closing:
                self._wake.wait(0.5)
            if self._closing:
                return None
            job = self._waiting.popleft()
            job.state, job.started, self.current = "running", time.time(), job
            return job

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            if self._abandoned(job):
                self.cancel(job, f"not polled for {self.abandon_after:g} s")
            self._run(job)

    def _abandoned(self, job: Job) -> bool:
        return job.polled and time.monotonic() - job.last_seen > self.abandon_after

    def _on_step(self, job: Job) -> Callable[[int, int], None]:
        def on_step(done: int, total: int) -> None:
            job.step, job.total = done, total
            if self._abandoned(job):
                self.cancel(job, f"not polled for {self.abandon_after:g} s")
            if job.stop.is_set():
                raise Cancelled() if job.cancelled else Interrupted()
            if time.time() - job.started > self.max_seconds:
                job.stop.set()
                raise Interrupted(f"stopped after {self.max_seconds:g} s, the longest a job may run (--max-job-seconds)")
        return on_step

    def _run(self, job: Job) -> None:
        try:
            job.result = self.run(job, self._on_step(job))
            state = "done"
        except Interrupted:
            state = "interrupted"
        except BaseException as exc:  # noqa: BLE001 - reported to the client, the worker goes on
            job.error, state = exc, "failed"
        with self._lock:
            self.current = None
            if state != "failed" and job.stop.is_set():  # stopped: the images reached so far, or none if cancelled
                state = "cancelled" if job.cancelled else "interrupted"
            if state == "cancelled":
                job.result = None
            self._durations.append(time.time() - job.started)
            self._finish(job, state)

    def _finish(self, job: Job, state: str) -> None:
        with self._lock:
            job.state, job.finished = state, time.time()
            job.request = None  # the decoded input images are no longer needed
            job.done.set()
            self._trim()

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in FINISHED]
        for j in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[j.id]
