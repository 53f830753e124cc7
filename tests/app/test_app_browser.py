"""End to end in a real browser: Debian's Chromium, headless, driven by Playwright, uploads a real
clip to the running app, asks a question, waits for the streamed answer and saves a screenshot.

Chromium comes from the system (`apt-get install chromium`, which scripts/test does on a fresh CI
machine), never from a browser download by a test tool. Without it the test fails under CI and
skips elsewhere, saying why.
"""

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from stanchat.app.config import AppConfig
from tests.tiny_app import app_models, moving_gif  # noqa: F401  (fixture)

# gradio's queue calls pandas options that pandas 3 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

CHROMIUM = Path("/usr/bin/chromium")
# no sandbox (root in a container), no GPU, and none of Chromium's own background traffic: the
# machine is offline, and without these flags Chromium floods refused connections
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CLIP = Path(__file__).parents[1] / "data" / "videos" / "yoga.mp4"  # 10 s, 568x320, H.264
FRAMES = 6
MAX_NEW_TOKENS = 24
QUESTION = "What is the woman doing?"
TIMEOUT_MS = 60_000


def _require(ok: bool, why: str) -> None:
    """Under CI a missing browser is a failure (it should have been installed); locally, a skip."""
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI is set, so the browser test must run)")
        pytest.skip(why)


@pytest.fixture(scope="module")
def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "the playwright package is not installed: pip install 'stanchat[test]'")
    return sync_playwright


@contextlib.contextmanager
def app_page(sync_playwright, url: str):
    """A Chromium page on the app at `url` (the test fails under CI, and skips elsewhere, without
    Debian's chromium)."""
    _require(CHROMIUM.is_file() and shutil.which(str(CHROMIUM)) is not None,
             f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/test does it when run as root)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def served(app_models):
    from stanchat.app.server import launch
    from stanchat.app.ui import build_app
    from stanchat.chat import load

    chat = load(llava=app_models["llava"], stan=app_models["stan"], device="cpu")
    config = AppConfig(frames=FRAMES, max_new_tokens=MAX_NEW_TOKENS, examples=(str(CLIP),))
    app = build_app(chat, config)
    address = launch(app, config, port=0, block=False, quiet=True)
    yield address, chat
    app.close()


@pytest.mark.browser
def test_upload_ask_and_see_the_streamed_answer_in_chromium(sync_playwright, served, tmp_path):
    from playwright.sync_api import expect

    url, chat = served
    expected = chat.ask(CLIP, QUESTION, frames=FRAMES, max_new_tokens=MAX_NEW_TOKENS).text  # greedy: the same answer
    with app_page(sync_playwright, url) as page:
        page.locator("#video input[type=file]").set_input_files(str(CLIP))
        # the strip: one captioned thumbnail per sampled frame, over the clip's 10 s
        expect(page.locator("#frames img")).to_have_count(FRAMES)
        expect(page.locator("#info")).to_contain_text("yoga.mp4 · 10.0 s · 30 fps · 568×320")
        expect(page.locator("#info")).to_contain_text(f"{FRAMES} frames → 4 video tokens · stan")
        page.locator("#question textarea").fill(QUESTION)
        page.locator("#question textarea").press("Enter")
        expect(page.locator("#chatbot [data-testid=user]")).to_have_text(QUESTION)
        expect(page.locator("#info")).to_contain_text("last answer: stan")  # set when streaming ends
        shown = page.locator("#chatbot [data-testid=bot]").inner_text()
        # the random model's answer, every `<`, `&` and `*` in it, shown literally (HTML folds whitespace)
        assert expected and shown.split() == expected.split()
        # the Mug weights: one bar per sampled frame, labelled with the strip's timestamps
        expect(page.locator("#weights [aria-roledescription=bar]")).to_have_count(FRAMES)
        captions = [c.strip() for c in page.locator("#frames .caption-label").all_inner_texts()]
        assert len(captions) == FRAMES and captions[0] == "0.83 s"
        axis = page.locator("#weights [aria-roledescription=axis]").first.get_attribute("aria-label")
        assert ", ".join(captions) in axis
        screenshot = tmp_path / "app.png"
        page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000


@pytest.mark.browser
def test_enter_in_the_frame_box_resamples_and_the_plot_stays_in_the_chat_tab(sync_playwright, served, tmp_path):
    from playwright.sync_api import expect

    url, chat = served
    with app_page(sync_playwright, url) as page:
        page.locator("#video input[type=file]").set_input_files(str(moving_gif(tmp_path / "moving.gif", size=48)))
        expect(page.locator("#preview-image img")).to_be_visible()  # a GIF: shown as an image
        expect(page.locator("#frames img")).to_have_count(FRAMES)
        box = page.locator("#frames-slider input[type=number]")
        box.fill("3")
        box.press("Enter")  # no click elsewhere: Enter alone re-samples
        expect(page.locator("#frames img")).to_have_count(3)
        box.fill("999")
        box.press("Enter")
        expect(page.locator("#frames img")).to_have_count(chat.graft.max_frames)
        expect(box).to_have_value(str(chat.graft.max_frames))
        expect(page.locator("#info")).to_contain_text("Frames sampled: 999 is more than the maximum")
        page.locator("#question textarea").fill(QUESTION)
        page.locator("#question textarea").press("Enter")
        expect(page.locator("#weights")).to_be_visible()
        page.get_by_role("tab", name="Compare").click()
        expect(page.locator("#compare-question")).to_be_visible()
        expect(page.locator("#weights")).to_be_hidden()  # the Chat question's plot is not the Compare tab's
