"""`load_video`: a video (or image, GIF, folder of frames) -> `SampledFrames` of T frames with timestamps.

The caller's process only checks the path and draws random offsets; everything that reads the
file (probe, sampling against the frame table, decoding) is one `DecodeJob` run by `run_job`, under
the watchdog in a worker process (see `stanchat.video.watchdog`). Backends are tried in order; a
backend that fails or stalls is logged and the next one gets the job.

What crosses the pipe back is the `SampledFrames`: its T frames, pickled, at the size asked for. With
`fit=` (a `Fit`, e.g. `Preprocessor.fit`) the worker resizes and crops each frame to the model's input
as soon as it is decoded, so T x crop x crop x 3 bytes cross (16 x 336 x 336 x 3 = 5.4 MB) whatever the
source's size; with `size=` the frames cross with that shorter side; with neither, at the display size
(16 frames of 1080p: 100 MB).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from stanchat.errors import Cancelled, StanchatError, VideoError
from stanchat.video.backends import AUTO, BACKENDS, PILLOW, Backend, BackendError, output_size
from stanchat.video.fit import Fit, import_resize
from stanchat.video.probe import probe
from stanchat.video.sample import check_request, draw_offsets, frames_at, sample_times, window_seconds
from stanchat.video.watchdog import run_guarded

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0  # seconds a decoder may go without progress before it is killed
DEFAULT_FOLDER_FPS = 30.0  # frame rate assumed for a folder of frames


@dataclass
class SampledFrames:
    """T frames of a video and where they come from."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB, upright (rotation applied); (T, crop, crop, 3) when fitted
    timestamps: list[float]  # presentation time of each frame, seconds from the source's first frame
    indices: list[int]  # each frame's number in the source (0-based, presentation order)
    fps: float  # the source's frame rate, measured from its timestamps (0.0 for a still image)
    duration: float  # the source's length in seconds (0.0 for a still image)
    width: int  # the source's width as displayed (after rotation and pixel aspect)
    height: int  # the source's height as displayed
    source_frames: int  # number of frames in the source
    decoder: str  # the backend that decoded the frames: "decord", "pyav" or "pillow"
    path: str  # the source file or folder
    fit: Fit | None = None  # the resize and crop the decoder applied to every frame (None: none)

    def summary(self) -> dict:
        """Everything but the pixels, as JSON-ready values (`frames` holds the frame indices)."""
        info = {k: v for k, v in asdict(self).items() if k not in ("frames", "indices", "fit")}
        return {"frames": list(self.indices), **info}



VideoClip = SampledFrames  # its old name, kept for code that imports it (easily taken for `VideoCLIP`, the model)

@dataclass(frozen=True)
class DecodeJob:
    """One attempt to load a clip with one backend; picklable, so it can run in the worker."""

    path: str  # file or folder, already checked to exist
    frames: int  # T, the number of frames to return (strategy "fps": at most T)
    strategy: str  # a name in stanchat.video.sample.STRATEGIES
    fps: float | None  # sampling rate for strategy "fps"
    start: float | None  # window start, seconds (None: the first frame)
    end: float | None  # window end, seconds (None: the end of the video)
    size: int | None  # shorter side of the returned frames in pixels (None: the source's display size)
    offsets: tuple[float, ...] | None  # strategy "random": position in [0, 1) inside each segment
    folder_fps: float  # frame rate assumed for a folder of frames
    backend: Backend  # decoder for video containers
    max_seconds: float | None = None  # refuse, before decoding, a window longer than this (None: any)
    fit: Fit | None = None  # resize and crop each frame as it is decoded (then `size` is None)
    max_pixels: int | None = None  # refuse, before decoding, frames of more pixels than this (None: any)


def run_job(job: DecodeJob, tick: Callable[[], None] = lambda: None) -> SampledFrames:
    """Probe, sample and decode in this process. `tick` reports progress to the watchdog.

    Raises VideoError / StanchatError for bad input or requests, BackendError for anything else
    (a decoder's own exception types), so the caller can try the next backend."""
    try:
        return _decode_clip(job, tick)
    except (StanchatError, BackendError):
        raise
    except Exception as err:
        raise BackendError(one_line(f"{type(err).__name__}: {err}")) from err


def _decode_clip(job: DecodeJob, tick: Callable[[], None]) -> SampledFrames:
    info = probe(job.path, job.folder_fps, tick)
    if job.max_seconds is not None:
        _check_length(job, info.duration)
    if job.max_pixels is not None:  # the stored size too: a decoder allocates that, whatever the pixel aspect
        check_pixels(job.path, max(info.display_size, (info.coded_width, info.coded_height), key=_area),
                     job.max_pixels)
    times = sample_times(info.duration, job.frames, job.strategy, job.fps, job.start, job.end, job.offsets)
    indices = frames_at(info.timestamps, times)
    distinct = sorted(set(indices))
    backend = job.backend if info.kind == "video" else PILLOW
    if job.fit is not None:
        import_resize()
        tick()  # a worker that had not loaded torch yet just spent a second or more on it
    pictures = backend.decode(info, distinct, output_size(info, job.size), tick, job.fit)  # (U, H, W, 3)
    if len(pictures) != len(distinct):
        raise BackendError(f"returned {len(pictures)} frames for {len(distinct)} requested")
    if job.fit is not None and pictures.shape[1:3] != (job.fit.crop_size, job.fit.crop_size):
        width, height = pictures.shape[2], pictures.shape[1]
        raise BackendError(f"returned {width}x{height} frames, not the {job.fit.crop_size} px squares of its fit")
    row = {i: k for k, i in enumerate(distinct)}
    return SampledFrames(
        frames=pictures[[row[i] for i in indices]],  # (U, H, W, 3) -> (T, H, W, 3): repeats where N < T
        timestamps=[info.timestamps[i] for i in indices],
        indices=indices,
        fps=info.fps,
        duration=info.duration,
        width=info.width,
        height=info.height,
        source_frames=info.count,
        decoder=backend.name,
        path=job.path,
        fit=job.fit,
    )


def load_video(
    path: str | os.PathLike,
    frames: int = 16,
    strategy: str = "uniform",
    *,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    size: int | None = None,
    fit: Fit | None = None,
    backend: str | Sequence[str | Backend] = "auto",
    generator: np.random.Generator | int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    folder_fps: float = DEFAULT_FOLDER_FPS,
    max_seconds: float | None = None,
    max_pixels: int | None = None,
    cancel: threading.Event | None = None,
) -> SampledFrames:
    """Load `frames` frames of a video file, still image, GIF or folder of frames.

    strategy: "uniform" (segment middles), "random" (random in each segment; seed it with
        `generator`, an int or numpy Generator) or "fps" (every 1/`fps` s, at most `frames`).
    start, end: only sample the window [start, end) seconds.
    size: shorter side of the returned frames, resized while decoding (None: the display size).
    fit: resize and centre-crop every frame to the model's input as it is decoded (a `Fit`, e.g.
        `Preprocessor.fit`), returning (T, crop, crop, 3); not with `size`. The same pixels as decoding
        at the display size and preprocessing, without full-size frames crossing to this process.
    backend: "auto" (decord, falling back to PyAV), "decord", "pyav", or a sequence tried in order.
    timeout: seconds a decoder may go without progress before it is killed and the next backend
        tries; None decodes in this process without the watchdog (can hang on bad files).
    folder_fps: frame rate of a folder of frames (their timestamps are i / folder_fps).
    max_seconds: refuse (VideoError, before decoding any frame) when the part sampled, the window
        [start, end) or else the whole video, is longer than this many seconds.
    max_pixels: refuse (VideoError, before decoding any frame) a source whose frames hold more pixels
        than this (width x height as displayed, or as stored when that is more).
    cancel: an event another thread sets to call the decode off: the decode worker running it is
        killed within a fraction of a second and `stanchat.errors.Cancelled` is raised.
    Raises VideoError (one line) for unreadable input, StanchatError for an impossible request.
    """
    check_request(frames, strategy, fps, start, end)
    _check_options(size, fit, timeout, folder_fps, max_seconds, max_pixels)
    source = check_source(path)
    chain = resolve_backends(backend)
    offsets = draw_offsets(strategy, frames, generator)
    failures = []
    for attempt in chain:
        job = DecodeJob(source, frames, strategy, fps, start, end, size, offsets, folder_fps, attempt, max_seconds, fit,
                        max_pixels)
        try:
            return _run(job, timeout, cancel)
        except BackendError as err:
            failures.append(f"{attempt.name}: {one_line(str(err))}")
            if attempt is not chain[-1]:
                _log_fallback(attempt.name, source, str(err))
    raise VideoError(f"could not decode {source}: {'; '.join(failures)}")


def _check_length(job: DecodeJob, duration: float) -> None:
    check_length(job.path, duration, job.start, job.end, job.max_seconds)


def check_length(path: str, duration: float, start: float | None, end: float | None, max_seconds: float) -> None:
    """Refuse (VideoError) sampling a window of `path` (or all of it) longer than `max_seconds`."""
    seconds = window_seconds(duration, start, end)
    if seconds <= max_seconds:
        return
    limit = f"{seconds:.1f} s long, more than the {max_seconds:g} s limit"
    if start is None and end is None:
        raise VideoError(f"{path} is {limit}; send a shorter video or a time window (start/end)")
    raise VideoError(f"the window sampled from {path} is {limit}; send a shorter window (start/end)")


def check_pixels(path: str, size: tuple[int, int], max_pixels: int) -> None:
    """Refuse (VideoError) a source of `path` whose (width, height) frames hold more than `max_pixels` pixels."""
    width, height = size
    if width * height <= max_pixels:
        return
    raise VideoError(f"{path} has {width}x{height} frames ({width * height / 1e6:.1f} megapixels), more than the "
                     f"limit of {max_pixels:,} pixels a frame; send a smaller video, or raise --max-frame-pixels")


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _log_fallback(backend: str, source: str, reason: str) -> None:
    """Warn the first time a backend fails for a cause; later clips with that cause log at debug level.

    A cause is the reason with the path and numbers taken out (a training run can refuse decord for
    the same reason on every one of thousands of clips)."""
    cause = (backend, re.sub(r"\d+(\.\d+)?", "#", one_line(reason).replace(source, "<path>")))
    if cause in _FALLBACK_CAUSES:
        logger.debug("%s could not decode %s (%s); trying the next decoder", backend, source, reason)
        return
    _FALLBACK_CAUSES.add(cause)
    logger.warning(
        "%s could not decode %s (%s); trying the next decoder (other files failing this way are logged at debug level)",
        backend, source, reason,
    )


_FALLBACK_CAUSES: set[tuple[str, str]] = set()  # (backend, reason without path and numbers) warned about


def _run(job: DecodeJob, timeout: float | None, cancel: threading.Event | None) -> SampledFrames:
    if timeout is not None and os.name == "posix":
        return run_guarded(job, timeout, cancel)
    if timeout is not None:  # the worker's pipes need POSIX file descriptors
        logger.debug("no decode watchdog on %s: decoding in this process", os.name)
    if cancel is not None and cancel.is_set():  # in this process a decode can only be called off before it starts
        raise Cancelled("the decode was cancelled")
    return run_job(job)


def _check_options(
    size: int | None, fit: Fit | None, timeout: float | None, folder_fps: float, max_seconds: float | None,
    max_pixels: int | None,
) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise StanchatError(f"size must be a whole number of pixels >= 1 or None, got {size!r}")
    if fit is not None and not isinstance(fit, Fit):
        raise StanchatError(f"fit must be a stanchat.video.fit.Fit (e.g. Preprocessor.fit) or None, got {fit!r}")
    if fit is not None and size is not None:
        raise StanchatError("give size or fit, not both: a fit sets the frames' size itself")
    if timeout is not None and not timeout > 0:
        raise StanchatError(f"timeout must be > 0 seconds or None, got {timeout!r}")
    if not folder_fps > 0:
        raise StanchatError(f"folder_fps must be > 0, got {folder_fps!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise StanchatError(f"max_seconds must be > 0 or None, got {max_seconds!r}")
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1):
        raise StanchatError(f"max_pixels must be a whole number of pixels >= 1 or None, got {max_pixels!r}")


def check_source(path: str | os.PathLike) -> str:
    """The local path to read, or VideoError naming what is wrong with `path` (URL, missing, empty)."""
    text = os.fspath(path)
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme and scheme.group(1).lower() == "file":
        text = urllib.parse.unquote(urllib.parse.urlparse(text).path)
    elif scheme:
        raise VideoError(
            f"{text}: URLs are not supported; download the video first (e.g. with yt-dlp or curl) and pass the file"
        )
    if not os.path.exists(text):
        raise VideoError(f"no such file or folder: {text}")
    if os.path.isdir(text):
        return text
    if not os.path.isfile(text):
        raise VideoError(f"{text} is not a regular file")
    if os.path.getsize(text) == 0:
        raise VideoError(f"{text} is empty (0 bytes); re-download or re-export it")
    if not os.access(text, os.R_OK):
        raise VideoError(f"cannot read {text}: permission denied")
    return text


def resolve_backends(backend: str | Sequence[str | Backend]) -> tuple[Backend, ...]:
    """The decoders to try, in order. "auto" skips decord when it is not installed."""
    if backend == "auto":
        names = [n for n in AUTO if n != "decord" or importlib.util.find_spec("decord") is not None]
        return tuple(BACKENDS[n] for n in names)
    items = [backend] if isinstance(backend, str) else list(backend)
    if not items:
        raise StanchatError("backend must name at least one decoder")
    chain = []
    for item in items:
        if isinstance(item, str) and item not in BACKENDS:
            raise StanchatError(f"unknown video backend {item!r}; choose one of: auto, {', '.join(BACKENDS)}")
        chain.append(BACKENDS[item] if isinstance(item, str) else item)
    return tuple(chain)


def one_line(message: str, limit: int = 300) -> str:
    """The first non-empty line of a (possibly multi-line, stack-traced) message, shortened."""
    line = next((part.strip() for part in message.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."
