"""The command line's log policy: library chatter only with --debug, stanchat's warnings once per cause."""

import io
import logging
import warnings

import pytest

from stanchat import logs


@pytest.fixture
def shown():
    handlers = []

    def install(debug: bool) -> io.StringIO:
        stream = io.StringIO()
        handlers.append(logs.configure(debug, stream))
        return stream

    yield install
    root = logging.getLogger()
    for handler in handlers:
        root.removeHandler(handler)
    logging.captureWarnings(False)


def chatter():
    """What bitsandbytes' int8 path and a deprecation look like, and a stanchat fallback warning."""
    for _ in range(5):
        logging.getLogger("bitsandbytes.autograd._functions").warning(
            "MatMul8bitLt: inputs will be cast from %s to float16 during quantization", "torch.float32")
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s", "trust")
    warnings.warn("this argument is deprecated", FutureWarning)
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        logging.getLogger("stanchat.video.backends").warning("decord cannot read %s; trying pyav", name)


def test_library_chatter_is_hidden_and_own_warnings_shown_once(shown):
    stream = shown(debug=False)
    chatter()
    lines = stream.getvalue().splitlines()
    assert lines == ["stanchat: WARNING: decord cannot read a.mp4; trying pyav"]


def test_a_library_error_is_still_shown(shown):
    stream = shown(debug=False)
    logging.getLogger("somelibrary.loader").error("weights of %s could not be loaded", "x")
    assert "weights of x could not be loaded" in stream.getvalue()


def test_debug_shows_everything_every_time(shown):
    stream = shown(debug=True)
    chatter()
    text = stream.getvalue()
    assert text.count("MatMul8bitLt") == 5
    assert "kernels-community" in text and "deprecated" in text
    assert text.count("trying pyav") == 3


def test_configure_twice_keeps_one_handler(shown):
    shown(debug=False)
    second = shown(debug=False)
    logging.getLogger("stanchat.x").warning("once")
    tagged = [h for h in logging.getLogger().handlers if getattr(h, "stanchat_cli", False)]
    assert len(tagged) == 1 and second.getvalue().count("once") == 1


def test_quantised_ask_prints_no_library_lines(capfd):
    """The issue's case end to end: `ask --load-8bit` on the bundled model gave 85 library lines."""
    pytest.importorskip("bitsandbytes")
    from stanchat.cli import main

    assert main(["ask", "examples/blue-triangle-left.mp4", "What happens in this video?", "--model", "tiny",
                 "--load-8bit"]) == 0
    out, err = capfd.readouterr()
    assert out.strip() and "MatMul8bitLt" not in out + err and "kernels-community" not in out + err
