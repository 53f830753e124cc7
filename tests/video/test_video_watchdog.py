"""The watchdog: a decoder that hangs (holding the GIL, in C) or crashes is killed and replaced.

The backends below run inside the decode worker, which imports this module by name to unpickle them.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import DATA, REPO

from stanchat.errors import Cancelled, ResourceError, StanchatError, VideoError
from stanchat.video import load_video
from stanchat.video.backends import PyAVBackend

CLIP = DATA / "bear-vp9-odd-dimensions.webm"
HANG_SECONDS = 3600  # what the hanging decoder would take if nothing stopped it


class HoldsTheGIL:
    """Blocks in C for an hour without releasing the GIL, as decord's get_batch does (dmlc/decord#375)."""

    name = "hangs"

    def decode(self, info, indices, size, tick, transform):
        ctypes.PyDLL(None).sleep(HANG_SECONDS)  # PyDLL: the GIL stays held during the call


class Segfaults:
    """Dies of SIGSEGV inside the decoder."""

    name = "segfaults"

    def decode(self, info, indices, size, tick, transform):
        ctypes.string_at(0)


class KilledFromOutside:
    """Gets SIGKILL while decoding, as from the out-of-memory killer."""

    name = "killed"

    def decode(self, info, indices, size, tick, transform):
        os.kill(os.getpid(), signal.SIGKILL)


class SlowButWorking:
    """Takes longer than the timeout in total but reports progress all along."""

    name = "slow"

    def decode(self, info, indices, size, tick, transform):
        for _ in range(10):
            time.sleep(0.2)
            tick()
        return PyAVBackend().decode(info, indices, size, tick, transform)


def test_a_decoder_hanging_in_c_falls_back_within_the_limit(caplog):
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="stanchat.video"):
        clip = load_video(CLIP, 4, backend=[HoldsTheGIL(), "pyav"], timeout=1.0)
    elapsed = time.monotonic() - started
    assert clip.decoder == "pyav" and clip.frames.shape[0] == 4
    assert elapsed < HANG_SECONDS / 60  # it was cut off, not waited for
    assert "hangs made no progress for 1 s and was killed" in caplog.text


def test_a_hanging_decoder_alone_gives_a_video_error():
    with pytest.raises(VideoError, match="made no progress for 0.5 s"):
        load_video(CLIP, 4, backend=[HoldsTheGIL()], timeout=0.5)


def test_a_crashing_decoder_falls_back():
    clip = load_video(CLIP, 4, backend=[Segfaults(), "pyav"])
    assert clip.decoder == "pyav"
    with pytest.raises(VideoError, match="segfaults crashed the decode worker .killed by SIGSEGV"):
        load_video(CLIP, 4, backend=[Segfaults()])


def test_a_worker_killed_from_outside_is_the_machines_failure_not_the_videos():
    """SIGKILL is what the out-of-memory killer sends: a ResourceError (a server answers 5xx), not a
    VideoError about the file, and the next decoder is not started on a machine short of memory."""
    with pytest.raises(ResourceError, match="decode worker was killed .killed by SIGKILL") as err:
        load_video(CLIP, 4, backend=[KilledFromOutside(), "pyav"])
    assert not isinstance(err.value, VideoError)


def test_progress_keeps_a_slow_decoder_alive():
    clip = load_video(CLIP, 4, backend=[SlowButWorking()], timeout=1.0)  # ~2 s of work, ticks every 0.2 s
    assert clip.decoder == "slow" and clip.frames.shape[0] == 4


def test_workers_are_reused_and_survive_a_fork():
    from stanchat.video.watchdog import _POOL

    load_video(CLIP, 2)
    workers = list(_POOL.idle)
    load_video(CLIP, 2)
    assert _POOL.idle == workers  # the same process served the second call
    child = os.fork()
    if child == 0:  # the child must start its own worker, not talk over the parent's pipes
        ok = load_video(CLIP, 2).frames.shape[0] == 2 and not set(_POOL.idle) & set(workers)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert load_video(CLIP, 3).frames.shape[0] == 3 and _POOL.idle == workers


def test_concurrent_callers_get_their_own_workers(generated):
    from concurrent.futures import ThreadPoolExecutor

    from videogen import read_index

    names = ["h264.mp4", "vp9.webm", "mjpeg.avi", "h264.mkv"] * 2
    with ThreadPoolExecutor(4) as pool:
        clips = list(pool.map(lambda n: load_video(generated[n], 5), names))
    assert all([read_index(f) for f in c.frames] == c.indices == [4, 12, 20, 28, 36] for c in clips)
    assert {c.path for c in clips} == {str(generated[n]) for n in names}


def _busy_worker_pid(deadline: float) -> int:
    """The pid of the worker taken for a job (waiting at most until `deadline`)."""
    from stanchat.video.watchdog import _POOL

    while not _POOL.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    return next(iter(_POOL.busy)).process.pid


def test_a_cancelled_decode_kills_its_worker_and_the_next_gets_a_fresh_one():
    """A caller that no longer wants the frames (a server's client hung up) sets its event: the worker,
    stuck in C for an hour, is killed long before its 600 s timeout, and Cancelled (nobody's mistake,
    not a StanchatError) is raised."""
    from stanchat.video.watchdog import _POOL

    cancel, outcome = threading.Event(), []

    def decode() -> None:
        try:
            load_video(CLIP, 2, backend=[HoldsTheGIL()], timeout=600, cancel=cancel)
        except Exception as err:
            outcome.append(err)

    started = time.monotonic()
    caller = threading.Thread(target=decode, daemon=True)  # daemon: a broken cancel fails the test, not the run
    caller.start()
    worker = _busy_worker_pid(started + 60)
    cancel.set()
    caller.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled) and not isinstance(outcome[0], StanchatError)
    assert not _alive(worker) and not _POOL.busy
    assert worker not in {idle.process.pid for idle in _POOL.idle}
    assert load_video(CLIP, 2, cancel=threading.Event()).frames.shape[0] == 2  # served by a fresh worker


def test_a_decode_cancelled_before_it_starts_sends_nothing():
    from stanchat.video.watchdog import _POOL

    load_video(CLIP, 2)
    idle = list(_POOL.idle)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        load_video(CLIP, 2, backend=[KilledFromOutside()], cancel=cancel)
    with pytest.raises(Cancelled):
        load_video(CLIP, 2, backend=[KilledFromOutside()], cancel=cancel, timeout=None)  # in this process too
    assert _POOL.idle == idle and all(worker.process.poll() is None for worker in idle)


CALLER = """
import sys, threading, time
sys.path[:0] = {paths!r}
from stanchat.video import load_video
from stanchat.video.watchdog import _POOL
from test_video_watchdog import HoldsTheGIL
def report():
    while not _POOL.busy:
        time.sleep(0.05)
    print(next(iter(_POOL.busy)).process.pid, flush=True)
threading.Thread(target=report, daemon=True).start()
load_video({clip!r}, 2, backend=[HoldsTheGIL()], timeout=600)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_stuck_worker_dies_with_its_parent():
    code = CALLER.format(paths=[str(REPO), str(REPO / "tests" / "video")], clip=str(CLIP))
    caller = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    with caller:
        worker = int(caller.stdout.readline())
        caller.send_signal(signal.SIGKILL)  # no cleanup runs in the caller
    deadline = time.monotonic() + 30
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has already died
    except FileNotFoundError:
        return False
