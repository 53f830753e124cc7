"""Give the memory of dropped conversations back to the system.

Gradio runs each event on one of a pool of worker threads, and glibc's malloc gives each thread an
arena of its own. A conversation's large buffers (its decoded frames, the preprocessed pixels, the
generation's temporaries) are freed into whichever arena they came from and stay mapped there, so
the server's resident memory kept climbing long after `--max-sessions` had bounded the conversations
themselves. Live memory is bounded by the session cap; this makes the resident size follow it.

Measured once, by hand, with a scratch script that is not kept (no test or benchmark measures
resident memory; tests/app/test_app_soak.py counts the objects and files kept): the app serving the tiny
test models in one process, 4 sessions kept, a new tab opening a 568x320 clip at 16 frames, tab
after tab. Resident memory (RSS) was 1016 MB after 10 tabs and 1207 MB after 120 without this call
and the collection in `stanchat.app.events`; 974 and 1026 MB with both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger(__name__)


@functools.cache
def _trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        logger.debug("no malloc_trim in %s: freed memory stays with the allocator", name)
        return None


def release_free_memory() -> bool:
    """Return the allocator's free memory, in every arena, to the system; False where that cannot
    be done (then the memory is still reused by later conversations, only not given back)."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True
