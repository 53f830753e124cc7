"""Video bytes held in memory go to the decoders through a private, short-lived file."""

from __future__ import annotations

import os
import stat

import pytest

from stanchat.errors import VideoError
from stanchat.video import spool


def test_spooled_bytes_are_a_private_file_deleted_afterwards():
    with spool.spooled(b"abc", ".mp4") as path:
        assert open(path, "rb").read() == b"abc" and path.endswith(".mp4")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not os.path.exists(path)


def test_a_full_ram_folder_falls_back_to_the_temporary_folder(monkeypatch, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    monkeypatch.setattr(spool, "RAM_FOLDER", str(full))
    real_fdopen = os.fdopen

    def fdopen(fd, mode):  # writing into the RAM folder fails as a full disk does
        handle = real_fdopen(fd, mode)
        if str(full) in os.readlink(f"/proc/self/fd/{fd}"):
            handle.close()
            raise OSError(28, "No space left on device")
        return handle

    monkeypatch.setattr(spool.os, "fdopen", fdopen)
    with spool.spooled(b"xyz", ".webm") as path:
        assert not path.startswith(str(full)) and open(path, "rb").read() == b"xyz"
    assert not list(full.iterdir())  # the failed copy was removed


def test_no_folder_at_all_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(spool, "_folders", lambda: [str(tmp_path / "missing")])
    with pytest.raises(VideoError, match="cannot write a temporary copy of a 3-byte video"):
        with spool.spooled(b"abc", ".mp4"):
            pass
