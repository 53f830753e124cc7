"""The decode worker: `python -m stanchat.video.worker REQUESTS_FD REPLIES_FD [--die-with PID]`.

Started and fed by `stanchat.video.watchdog`. It reads pickled `DecodeJob`s from one pipe and
answers each on the other with ("ok", SampledFrames) or (status, one-line message), sending TICK
messages while it works. It exits when the request pipe closes.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import time
from multiprocessing.connection import Connection

from stanchat.errors import StanchatError, VideoError
from stanchat.video.backends import BackendError
from stanchat.video.fit import import_resize
from stanchat.video.load import one_line, run_job
from stanchat.video.watchdog import READY, TICK, TICK_INTERVAL

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stanchat.video.worker")
    parser.add_argument("requests_fd", type=int)
    parser.add_argument("replies_fd", type=int)
    parser.add_argument("--die-with", type=int, default=None, help="parent pid: get SIGKILL when it dies (Linux)")
    parser.add_argument("--torch", action="store_true", help="import torch before READY (jobs that fit frames)")
    args = parser.parse_args(argv)
    if args.die_with is not None:
        _die_with(args.die_with)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which kills us if needed
    # torch (loaded for jobs with a fit) resizes one frame at a time while FFmpeg's threads decode the
    # next: one thread is faster than a pool fighting them (measured 0.96 s vs 1.04 s, 16 frames of
    # 1080p on 2 cores), and the same pixels (the uint8 kernel's output does not depend on threads)
    os.environ["OMP_NUM_THREADS"] = "1"
    requests = Connection(args.requests_fd, writable=False)
    replies = Connection(args.replies_fd, readable=False)
    _preload(args.torch)
    replies.send(READY)
    while True:
        try:
            job = requests.recv()
        except EOFError:
            return 0
        except Exception as err:  # a job that cannot be unpickled here (e.g. an unimportable backend)
            replies.send(("backend", one_line(f"the decode worker cannot load the job: {type(err).__name__}: {err}")))
            continue
        replies.send(_answer(job, _ticker(replies)))


def _answer(job, tick) -> tuple[str, object]:
    try:
        return "ok", run_job(job, tick)
    except VideoError as err:
        return "video", str(err)
    except StanchatError as err:
        return "user", str(err)
    except BackendError as err:
        return "backend", one_line(str(err))
    except Exception as err:  # the probe or a decoder failed in a way we did not foresee: next backend
        return "backend", one_line(f"{type(err).__name__}: {err}")


def _ticker(replies: Connection):
    last = time.monotonic()

    def tick() -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= TICK_INTERVAL:
            replies.send(TICK)
            last = now

    return tick


def _preload(torch: bool) -> None:
    """Import the libraries every job needs before saying READY (decord stays lazy: it may be broken),
    and torch when asked (jobs with a fit; others never load it)."""
    import av  # noqa: F401
    import numpy  # noqa: F401
    import PIL.Image  # noqa: F401

    if torch:
        import_resize()


def _die_with(parent: int) -> None:
    """Ask Linux to SIGKILL this process when the parent dies, even mid-way through C code."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
