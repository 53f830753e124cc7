"""The files a conversation leaves on the server, removed with the conversation.

Gradio keeps every upload, and every image an event returns, in its cache folder and deletes them
only by age (`delete_cache`, an hour here), so without this a busy server would hold the files of
every conversation of the last hour however few conversations it keeps (--max-sessions). Here a
conversation owns its files: its frame strip is written to a folder of its own inside Gradio's
cache (served from there as is), and its upload is held from the moment it is opened. When the
conversation opens another video, finds that the file it opened cannot be used (a bad upload), or
is dropped (Gradio lets go of its state: the session cap, the idle timeout), the strip goes and the
upload is given back; an upload that no kept conversation holds is deleted then. Only files that
arrived as uploads are ever deleted: an example's cached copy is shared by every tab.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

STRIP_FORMAT = "webp"  # what Gradio itself writes for images an event returns


class Uploads:
    """Which uploaded files the kept conversations use, one count per holder, shared by all tabs."""

    def __init__(self, is_upload: Callable[[str], bool] = lambda path: False):
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._is_upload = is_upload  # True for a file that came through the upload route

    def hold(self, path: str) -> None:
        with self._lock:
            self._held[path] += 1

    def release(self, path: str) -> None:
        """One holder less; the file goes when none is left and it is an upload."""
        with self._lock:
            self._held[path] -= 1
            if self._held[path] > 0:
                return
            del self._held[path]
        if self._is_upload(path):
            _remove_upload(path)

    def __len__(self) -> int:
        """How many distinct files are held."""
        return len(self._held)


def _remove_upload(path: str) -> None:
    """Delete an upload and its folder when that is left empty (Gradio puts each upload in a
    folder named after its content's hash)."""
    try:
        os.remove(path)
        os.rmdir(Path(path).parent)
    except OSError:  # gone already, or the folder still holds another name of the same content
        pass


class ConversationFiles:
    """One conversation's files: the upload it holds and its frame strip's images."""

    def __init__(self, uploads: Uploads, root: str | None = None):
        self._uploads = uploads
        self._root = root  # Gradio's cache folder (None: the system's temporary folder)
        self._folder: str | None = None  # made on the first strip
        self._strip: list[str] = []
        self._written = 0  # strips written so far: each gets new names, so browsers never show a stale one
        self.upload: str | None = None

    def use_upload(self, path: str | None) -> None:
        """Hold `path` (None: nothing) and give back the upload held before."""
        if path is not None:
            self._uploads.hold(path)
        if self.upload is not None:
            self._uploads.release(self.upload)
        self.upload = path

    def write_strip(self, images: list["np.ndarray"]) -> list[str]:
        """Write the strip's images ((H, W, 3) uint8 each) in place of the last strip's; their paths."""
        from PIL import Image

        self.clear_strip()
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="conversation-", dir=self._root)
        self._written += 1
        for k, image in enumerate(images):
            path = os.path.join(self._folder, f"strip{self._written}-{k}.{STRIP_FORMAT}")
            Image.fromarray(image).save(path)
            self._strip.append(path)
        return list(self._strip)

    def clear_strip(self) -> None:
        for path in self._strip:
            try:
                os.remove(path)
            except OSError:
                pass
        self._strip = []

    def close(self) -> None:
        """Remove everything: the conversation is gone (runs from its finaliser, on any thread)."""
        self.use_upload(None)
        self._strip = []
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
