"""The job queue: one worker thread runs the model; requests wait in a bounded queue.

- full queue -> `QueueFull` (the routes answer 503 with Retry-After), never an unbounded pile-up;
- interrupt stops only the running job (checked at every sampling step);
- a job whose client went away is cancelled: sync routes watch the connection, `/jobs` jobs are
  cancelled after `abandon_after` seconds without a poll;
- finished jobs are kept for `/jobs/{id}` up to `keep` of them (memory stays bounded).
"""

from __future__ import annotations

import collections
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlnet.web.engine import Interrupted

FINISHED = ("done", "failed", "interrupted", "cancelled")


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(f"the queue is full; retry in about {retry_after} s")


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

    @property
    def progress(self) -> float:
        if self.state == "done":
            return 1.0
        return self.step / self.total if self.total else 0.0


class JobQueue:
    """`run(job, on_step)` does the work of one job in the worker thread and returns its result."""

    def __init__(self, run: Callable, size: int = 8, keep: int = 64, abandon_after: float = 30.0):
        self.run, self.keep, self.abandon_after = run, keep, abandon_after
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=size)
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self.current: Job | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ clients

    def submit(self, kind: str, request, polled: bool = False, owner: str | None = None) -> Job:
        job = Job(kind, request, polled, owner)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(self.retry_after()) from None
        with self._lock:
            self._jobs[job.id] = job
            self._trim()
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
        if job.state != "queued":
            return 0
        with self._lock:
            waiting = [j for j in self._jobs.values() if j.state == "queued"]
        return waiting.index(job) + 1 if job in waiting else 0

    def cancel(self, job: Job) -> None:
        """Stop a job: a queued one never starts, a running one stops at its next step."""
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
        return max(1, math.ceil(mean * (self._queue.qsize() + 1)))

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    # ------------------------------------------------------------------ worker

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="controlnet-worker", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._closing.set()
        if self.current is not None:
            self.current.stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if job.stop.is_set() or self._abandoned(job):
                self._finish(job, "cancelled")
                continue
            self._run(job)

    def _abandoned(self, job: Job) -> bool:
        return job.polled and time.monotonic() - job.last_seen > self.abandon_after

    def _on_step(self, job: Job) -> Callable[[int, int], None]:
        def on_step(done: int, total: int) -> None:
            job.step, job.total = done, total
            if job.stop.is_set() or self._abandoned(job):
                raise Interrupted()
        return on_step

    def _run(self, job: Job) -> None:
        self.current, job.state, job.started = job, "running", time.time()
        try:
            job.result = self.run(job, self._on_step(job))
            state = "interrupted" if job.stop.is_set() else "done"  # stopped: the images reached so far
        except Interrupted:
            state = "interrupted"
        except BaseException as exc:  # noqa: BLE001 - reported to the client, the worker goes on
            job.error, state = exc, "failed"
        finally:
            self.current = None
        self._durations.append(time.time() - job.started)
        self._finish(job, state)

    def _finish(self, job: Job, state: str) -> None:
        job.state, job.finished = state, time.time()
        job.request = None  # the decoded input images are no longer needed
        job.done.set()
        with self._lock:
            self._trim()

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in FINISHED]
        for j in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[j.id]
