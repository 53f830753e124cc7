"""What the chat app starts with and what it allows: one dataclass. `stanchat serve --help` reads it,
so it imports stanchat's video and dataset modules (for the kinds of file they read) and nothing
heavier: no torch, numpy or gradio."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from stanchat.datasets.base import VIDEO_EXTENSIONS
from stanchat.errors import StanchatError
from stanchat.options import DEFAULTS, MAX_FRAME_PIXELS, VideoOptions, check_frames, check_temporal
from stanchat.video.probe import IMAGE_SUFFIXES
from stanchat.video.sample import check_request

DEFAULT_PORT = 7860  # gradio's usual port; 0 picks a free one

SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}  # what --max-file-size takes
SIZE_FORM = "a number and a unit, e.g. 500kB, 200MB or 1.5GB"
# What the app takes, as stanchat.video reads it: the video containers the dataset readers know, GIF
# (decoded as a video), and the still images the decoders read. The upload box offers these, and
# a folder given to --examples contributes these.
ANIMATED_SUFFIXES = (".gif",)
UPLOAD_SUFFIXES = tuple(dict.fromkeys((*VIDEO_EXTENSIONS, *ANIMATED_SUFFIXES, *IMAGE_SUFFIXES)))


@dataclass(frozen=True)
class AppConfig:
    frames: int = DEFAULTS.frames  # the frame-count slider's initial value
    temporal: str = DEFAULTS.temporal  # the temporal mode selected at start
    max_new_tokens: int = DEFAULTS.max_new_tokens  # answer length limit, initial value
    temperature: float = DEFAULTS.temperature  # sampling temperature, initial value (0 = greedy)
    max_duration: float = 600.0  # seconds; longer videos are refused with a message in the chat
    max_file_size: str = "200MB"  # largest upload the server accepts (gradio's max_file_size)
    max_frame_pixels: int = MAX_FRAME_PIXELS  # larger frames (width x height) are refused before decoding
    concurrency: int = 1  # model calls running at once across all users (decode, answer, compare)
    queue_size: int = 16  # requests that may wait for a slot; more are refused with "queue is full"
    max_sessions: int = 32  # conversations (browser tabs) kept in memory, each with its decoded video; oldest dropped
    idle_timeout: float = 3600.0  # seconds a conversation is kept after its last event
    examples: tuple[str, ...] = ()  # example video files offered under the upload box
    strategy: str = "uniform"  # how each video's frames are picked (stanchat.video.STRATEGIES)
    fps: float | None = None  # rate for strategy "fps" (still at most `frames` frames)
    start: float | None = None  # sample from this second on
    end: float | None = None  # sample before this second
    seed: int | None = None  # seed for strategy "random"
    segments: int = DEFAULTS.segments  # windows of the temporal mode "segments"
    select: str = DEFAULTS.select  # uniform | question: each question picks its frames (Mug weights)
    candidates: int = DEFAULTS.candidates  # frames scored against each question under select "question"

    def __post_init__(self) -> None:
        check_frames(self.frames)
        check_temporal(self.temporal)
        check_request(self.frames, self.strategy, self.fps, self.start, self.end)
        self.video_options(self.frames, self.temporal)  # segments, select and candidates checked together
        parse_size(self.max_file_size)
        if not self.max_duration > 0:
            raise StanchatError(f"--max-duration must be > 0 seconds, got {self.max_duration}")
        if self.max_frame_pixels < 1:
            raise StanchatError(f"--max-frame-pixels must be at least 1, got {self.max_frame_pixels}")
        if self.concurrency < 1:
            raise StanchatError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.queue_size < 1:
            raise StanchatError(f"--queue-size must be at least 1, got {self.queue_size}")
        if self.max_sessions < 1:
            raise StanchatError(f"--max-sessions must be at least 1, got {self.max_sessions}")
        if not self.idle_timeout > 0:
            raise StanchatError(f"idle_timeout must be > 0 seconds, got {self.idle_timeout}")


    def video_options(self, frames: int, temporal: str) -> VideoOptions:
        """The options a video is sampled and encoded with at the controls' `frames` and `temporal`."""
        return VideoOptions(frames=frames, temporal=temporal, strategy=self.strategy, fps=self.fps, start=self.start,
                            end=self.end, seed=self.seed, segments=min(self.segments, frames), select=self.select,
                            candidates=max(self.candidates, frames))


def parse_size(text: str) -> int:
    """Bytes in a size such as '200MB', '1.5GB' or '500kB' (units of 1024, case-insensitive); one
    line naming the accepted form for anything else, zero or negative included."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)\s*", str(text), re.IGNORECASE)
    unit = SIZE_UNITS.get(match.group(2).upper()) if match else None
    size = int(float(match.group(1)) * unit) if unit else 0
    if size < 1:
        raise StanchatError(f"--max-file-size {text!r} is not a size; give {SIZE_FORM}")
    return size


def find_examples(paths: list[str | os.PathLike] | None) -> tuple[str, ...]:
    """Example videos: each path is a video file or a folder whose video files (sorted) are used."""
    found: list[str] = []
    for path in paths or []:
        path = Path(path).expanduser()
        if path.is_dir():
            found += sorted(str(p.resolve()) for p in path.iterdir() if p.suffix.lower() in UPLOAD_SUFFIXES)
        elif path.is_file():
            found.append(str(path.resolve()))
        else:
            raise StanchatError(f"--examples {path}: no such file or folder")
    return tuple(found)


def is_video_file(path: str) -> bool:
    """True for a video container (the app previews it as a video), False for a GIF or an image."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS
