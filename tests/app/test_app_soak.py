"""Many conversations against one running app with a small --max-sessions: what the server keeps
(conversations and their encoded videos, Gradio's session states, uploads, frame strips) stays
bounded by the cap however many tabs come and go, and an upload that cannot be used is not kept.
Counts objects and files, not time or memory.

Python's automatic garbage collection is paused while the tabs run, so that only what the app
frees itself counts: Gradio drops a tab's state in reference cycles of its own, which without the
app's collection would keep each dropped tab's video until a full collection happened to run.
"""

import gc
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from stanchat.app.config import AppConfig  # noqa: E402
from stanchat.app.conversation import Conversation  # noqa: E402
from stanchat.app.server import launch, private_upload_folder  # noqa: E402
from stanchat.app.ui import build_app  # noqa: E402
from stanchat.chat import load  # noqa: E402
from stanchat.session import Session  # noqa: E402
from tests.tiny_app import app_models  # noqa: E402,F401  (fixture)
from tests.tiny_llava import write_video  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

MAX_SESSIONS = 3
TABS = 12  # four times the cap
FRAMES = 4


def _live(kind, belongs) -> int:
    """Objects of `kind` for which `belongs` holds that the interpreter still has, garbage not yet
    collected included (other tests' apps may still be alive in this process)."""
    return sum(type(o) is kind and belongs(o) for o in gc.get_objects())


def _kept(app, chat, folder: Path) -> dict[str, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    strips = [p for p in files if p.parent.name.startswith("conversation-")]
    return {"conversations": _live(Conversation, lambda c: c.chat is chat),
            "sessions": _live(Session, lambda s: s.chat is chat),
            "gradio states": len(app.state_holder.session_data), "uploads": len(files) - len(strips),
            "strip images": len(strips), "strip folders": len({p.parent for p in strips})}


@pytest.fixture
def no_automatic_gc():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.slow
def test_many_tabs_leave_bounded_state(app_models, tmp_path, no_automatic_gc):
    chat = load(llava=app_models["llava"], stan=app_models["stan"], device="cpu")
    config = AppConfig(frames=FRAMES, max_new_tokens=4, max_sessions=MAX_SESSIONS)
    videos = [write_video(tmp_path / f"clip{i}.mp4", frames=12 + i) for i in range(2 * TABS)]  # each a new upload
    bad = [app_models[kind] for kind in ("text", "truncated", "noise")]
    counts = []
    with private_upload_folder() as folder:
        app = build_app(chat, config)
        url = launch(app, config, port=0, block=False, quiet=True)
        try:
            for tab in range(TABS):
                client = Client(url, verbose=False, download_files=False)  # nothing of the client's in the folder
                first, second = videos[2 * tab: 2 * tab + 2]  # a tab opens a second video in place of its first,
                for video in (first, bad[tab % len(bad)], second):  # and before it a file it cannot use
                    client.predict(handle_file(str(video)), FRAMES, "stan", api_name="/load_video")
                client.submit("What moves?", 4, 0.0, api_name="/ask").result()
                counts.append(_kept(app, chat, Path(folder)))
        finally:
            app.close()
    most = {name: max(count[name] for count in counts) for name in counts[0]}
    assert most == {"conversations": MAX_SESSIONS, "sessions": MAX_SESSIONS, "gradio states": MAX_SESSIONS,
                    "uploads": MAX_SESSIONS, "strip images": MAX_SESSIONS * FRAMES, "strip folders": MAX_SESSIONS}
    assert counts[-1] == most  # the cap was reached and held, tab after tab


def test_freed_memory_goes_back_where_the_c_library_can_give_it(monkeypatch):
    """glibc (Linux) has malloc_trim, called after each event; elsewhere the call is a no-op that
    says so. Its effect on resident memory, measured once by hand, is in stanchat/app/memory.py's docstring."""
    import platform

    from stanchat.app import memory

    memory._trim.cache_clear()
    assert memory.release_free_memory() is (platform.libc_ver()[0] == "glibc")
    memory._trim.cache_clear()
    monkeypatch.setattr("ctypes.util.find_library", lambda name: None)
    assert memory.release_free_memory() is False
    memory._trim.cache_clear()
