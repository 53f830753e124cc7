"""The watchdog: decode in a worker process that is killed when it stops making progress.

Why a process and not a thread. decord hangs inside native code: `get_batch` spinning at 100% CPU
for hours on ordinary H.264 files (dmlc/decord#375, #269, #284), looping on frames a header
over-counts (#373), deadlocking while a reader is freed (#154). That code holds the GIL and ignores
SIGTERM. A watchdog thread cannot stop it: Python cannot interrupt C code, and a GIL-holding loop
starves the watchdog thread itself, so even a timeout check would never run. Only another process
can stop it (SIGKILL), and only another process survives a decoder that segfaults.

Design:
- Each job (probe + sample + decode, see `stanchat.video.load.run_job`) runs in a worker started as
  `python -m stanchat.video.worker`: a fresh interpreter, not a fork. Forking a process that already
  runs threads (torch's OpenMP pool, a Gradio server) can deadlock the child; multiprocessing's
  spawn/forkserver would re-import the caller's `__main__` (a training script importing torch) in
  every child.
- Workers are reused (a pool, one per concurrent caller), so the interpreter start is paid once per
  process, not per video. A job is two pipe messages: the `DecodeJob` out, the `SampledFrames` back with
  its frames pickled at the size the job asked for. A job with a `fit` (what `VideoChat` sends) gets
  frames at the model's input size, T x crop x crop x 3 bytes (16 x 336 px: 5.4 MB), because the worker
  resizes and crops each frame as soon as it is decoded. Without one they come back at `size`, or at
  the display size (16 frames of 1080p: 100 MB).
- Fitting needs torch in the worker (about a second to import and ~450 MB of RSS, much of it shared
  library pages), so a worker imports it only for a job with a fit: a worker started for such a job
  imports it before READY (under STARTUP_TIMEOUT), a reused one at the job's start. `prestart` starts
  a worker ahead of the first video, e.g. while a model loads, so `stanchat ask` does not wait for it.
- Progress, not total time, is watched: the worker sends a tick while the probe demuxes and after each
  decoded frame or keyframe group (at most every TICK_INTERVAL s). `timeout` is the longest the parent
  waits between messages, so a slow but working decode of an 8K or two-hour video is not killed and a
  stuck one is killed `timeout` seconds after it stopped. Starting a worker (Python, PyAV) has its own
  allowance, STARTUP_TIMEOUT, so a busy machine does not turn a slow start into a "hang".
- A stalled or crashed worker is killed and dropped; the caller then tries the next backend. A worker
  killed from outside with SIGKILL (the out-of-memory killer, an operator) is the machine's failure,
  not the file's: ResourceError, without trying the next backend on a machine short of memory.
- A caller may call its job off (a server whose client hung up): while it waits for the worker it
  looks at its cancel event every CANCEL_POLL s; once set, the worker is killed (decoders cannot be
  interrupted more gently, see above), dropped, and Cancelled raised (also while it was still
  starting up: the next job starts a fresh one).
- The worker dies with its parent: it exits when its request pipe closes and, when started from the
  main thread on Linux, gets SIGKILL if the parent dies (PR_SET_PDEATHSIG) even while stuck in C code.
- Forked children of the caller (DataLoader workers) start their own workers instead of sharing.
Measured cost (benchmarks/decode.py, 2 shared CPU cores): the first call in a process takes
0.5-0.8 s more (the worker starts and imports PyAV), later calls 5-10 ms more than decoding in
process (two pipe messages and the pickled frames).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection

from stanchat.errors import Cancelled, ResourceError, StanchatError, VideoError
from stanchat.video.backends import BackendError

logger = logging.getLogger(__name__)

TICK = "tick"  # the worker's progress message
READY = "ready"  # the worker's first message: started, libraries imported
TICK_INTERVAL = 0.2  # seconds between progress messages at most (more often would only cost pipe writes)
EXIT_WAIT = 1.0  # seconds an idle worker gets to exit when the caller does
STARTUP_TIMEOUT = 60.0  # seconds a new worker may take to start and import PyAV (not counted in `timeout`)
CANCEL_POLL = 0.1  # seconds between looks at a caller's cancel event while its worker works

# Reply status -> exception raised in the caller.
_ERRORS = {"video": VideoError, "user": StanchatError, "backend": BackendError}


class _Worker:
    """One worker process and the two pipes to it."""

    def __init__(self, torch: bool) -> None:
        to_worker, from_parent = os.pipe()[::-1]  # (write end kept here, read end for the worker)
        from_worker, to_parent = os.pipe()
        argv = [sys.executable, "-m", "stanchat.video.worker", str(from_parent), str(to_parent)]
        if torch:
            argv.append("--torch")  # import torch before READY: its jobs will fit frames
        if sys.platform == "linux" and threading.current_thread() is threading.main_thread():
            argv += ["--die-with", str(os.getpid())]  # PDEATHSIG follows the spawning thread: main only
        quiet = not logging.getLogger("stanchat").isEnabledFor(logging.DEBUG)
        self.process = subprocess.Popen(
            argv,
            pass_fds=(from_parent, to_parent),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # nothing a decoder prints may reach the caller's stdout (--json)
            stderr=subprocess.DEVNULL if quiet else None,  # FFmpeg/decord chatter only with --debug
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)},
        )
        os.close(from_parent)
        os.close(to_parent)
        self.requests = Connection(to_worker, readable=False)
        self.replies = Connection(from_worker, writable=False)
        self.ready = False  # READY received: startup is over and `timeout` applies from now on

    def close(self) -> None:
        """Close the pipes: an idle worker sees end-of-file and exits."""
        self.requests.close()
        self.replies.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.close()


class _Pool:
    """Idle workers of this process; a caller takes one (or starts one) per job."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []  # started and waiting for a job
        self.busy: set[_Worker] = set()  # running a job for some caller

    def acquire(self, torch: bool) -> _Worker:
        """An idle worker, else a new one (importing torch at start when `torch`)."""
        with self.lock:
            worker = self.idle.pop() if self.idle else None
        if worker is not None and worker.process.poll() is not None:  # died while idle (e.g. OOM killer)
            worker.close()
            worker = None
        if worker is None:
            worker = _Worker(torch)
        with self.lock:
            self.busy.add(worker)
        return worker

    def prestart(self, torch: bool) -> None:
        """Start a worker now, idle, unless one is idle already; it starts up while the caller works."""
        with self.lock:
            if self.idle:
                return
        worker = _Worker(torch)
        with self.lock:
            self.idle.append(worker)

    def release(self, worker: _Worker, healthy: bool) -> None:
        with self.lock:
            self.busy.discard(worker)
            if healthy:
                self.idle.append(worker)
        if not healthy:
            worker.kill()

    def forget(self) -> None:
        """In a forked child: the workers belong to the parent; drop our copies of their pipes."""
        for worker in [*self.idle, *self.busy]:
            worker.close()
        self.lock = threading.Lock()  # another thread may have held the old one at the fork
        self.idle, self.busy = [], set()

    def shutdown(self) -> None:
        """At exit: idle workers see their pipe close and exit; busy ones are killed."""
        for worker in self.idle:
            worker.close()
            try:
                worker.process.wait(timeout=EXIT_WAIT)
            except subprocess.TimeoutExpired:
                worker.process.kill()
        for worker in list(self.busy):  # still decoding at exit: nobody will read the answer
            worker.kill()


_POOL = _Pool()
if hasattr(os, "register_at_fork"):  # POSIX; elsewhere load_video decodes in-process
    os.register_at_fork(after_in_child=_POOL.forget)
atexit.register(_POOL.shutdown)


def prestart(torch: bool = True) -> None:
    """Start a decode worker ahead of the first `load_video` (a no-op where there is no watchdog or a
    worker is idle already), importing torch too when `torch` (for `load_video(..., fit=)`)."""
    if os.name == "posix":
        _POOL.prestart(torch)


def run_guarded(job, timeout: float, cancel: threading.Event | None = None):
    """Run `stanchat.video.load.run_job(job)` in a worker; BackendError if it stalls for `timeout` s or crashes.
    Once `cancel` is set (by another thread) the worker is killed within CANCEL_POLL seconds and
    Cancelled is raised; the next job gets a fresh worker."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("the decode was cancelled")
    worker = _POOL.acquire(torch=job.fit is not None)
    healthy = False
    try:
        reply = _exchange(worker, job, timeout, cancel)
        healthy = True  # it answered, so it is idle again and can take the next job
    finally:
        _POOL.release(worker, healthy)
    status, payload = reply
    if status == "ok":
        return payload
    raise _ERRORS[status](payload)


def _exchange(worker: _Worker, job, timeout: float, cancel: threading.Event | None) -> tuple[str, object]:
    name = job.backend.name
    try:
        if not worker.ready:  # a loaded machine can take seconds to start Python and import PyAV
            if not _wait(worker, STARTUP_TIMEOUT, cancel) or worker.replies.recv() != READY:
                raise BackendError(f"the decode worker did not start within {STARTUP_TIMEOUT:g} s")
            worker.ready = True
        worker.requests.send(job)
        while True:
            if not _wait(worker, timeout, cancel):
                raise BackendError(f"{name} made no progress for {timeout:g} s and was killed")
            message = worker.replies.recv()
            if message != TICK:
                return message
    except (EOFError, OSError):
        reason = _exit_reason(worker.process)
        if worker.process.returncode == -signal.SIGKILL:  # killed from outside (we kill only after giving up)
            raise ResourceError(f"the decode worker was killed ({reason}), as the out-of-memory killer does; "
                                "retry, or free memory on the machine") from None
        raise BackendError(f"{name} crashed the decode worker ({reason})") from None


def _wait(worker: _Worker, seconds: float, cancel: threading.Event | None) -> bool:
    """True once the worker has a message for us, False after `seconds` without one; Cancelled as soon
    as `cancel` is set (looked at every CANCEL_POLL s)."""
    if cancel is None:
        return worker.replies.poll(seconds)
    deadline = time.monotonic() + seconds
    while not cancel.is_set():
        left = deadline - time.monotonic()
        if worker.replies.poll(max(0.0, min(left, CANCEL_POLL))):
            return True
        if left <= CANCEL_POLL:
            return False
    raise Cancelled("the decode was cancelled")


def _exit_reason(process: subprocess.Popen) -> str:
    try:
        code = process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return "pipe closed"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}; its output shows when stanchat runs with --debug"
