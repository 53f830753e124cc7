"""Defaults shared by the Python API and the CLI, in one light module (no torch import), so each
value has exactly one default whichever way stanchat is driven."""

from __future__ import annotations

from dataclasses import dataclass, fields

from stanchat.errors import StanchatError

# How the T frames of a video reach the LLM (DESIGN.md "Graft onto LLaVA"):
#   stan   - CLIP tokens averaged with the STAN branch's tokens: one image's worth (L+1 before the strategy)
#   mean   - frame-mean CLIP tokens, no STAN: same count; equals stock LLaVA image features at T = 1
#   concat - every frame's tokens one after another (FreeVA-style): T times one image's worth
#   segments - the T frames split into S consecutive windows, each through STAN to its own image's
#              worth, in time order, each block introduced by its time span (`stanchat.segments`)
TEMPORAL_MODES = ("stan", "mean", "concat", "segments")

# Which frames of the video reach the graft (`stanchat.selection`):
#   uniform  - `frames` frames sampled by `strategy`
#   question - `candidates` frames sampled uniformly, scored against the question with Mug's
#              text-to-frame weights, and the `frames` frames the question is about kept
SELECT_MODES = ("uniform", "question")
MAX_CANDIDATES = 256  # candidate frames decoded at most for select=question (a memory ceiling)

LOCALHOST = "127.0.0.1"  # servers' default address (stanchat api, stanchat serve): only this machine can connect
# The servers' frame-size ceiling (stanchat api, stanchat serve: --max-frame-pixels), checked before
# decoding: the largest picture the top levels of H.264, HEVC and AV1 allow, 8192x4352 (8K UHD and
# DCI 8K fit, in either orientation). `stanchat ask` has none: the file is its user's own.
MAX_FRAME_PIXELS = 8192 * 4352

# How a text is scored against a video's T frame features (`VideoTextModel.similarity`):
#   mean       - cosine of the text's pooled feature with the frame-mean feature
#   mug        - Mug alignment of text tokens and frames (paper Eq. 11-18)
#   mug-simple - Mug's two guided scores averaged instead of Eq. 18's product form
SCORING_MODES = ("mean", "mug", "mug-simple")


@dataclass(frozen=True)
class AskDefaults:
    frames: int = 16  # frames sampled uniformly over the whole video (1..STAN's max_frames, 64)
    temporal: str = "stan"  # one of TEMPORAL_MODES
    max_new_tokens: int = 256  # answer length limit, in LLM tokens
    temperature: float = 0.0  # 0 means greedy decoding; > 0 samples
    top_p: float = 1.0  # nucleus sampling mass (only when temperature > 0)
    batch_size: int = 8  # requests one padded `generate` may run together (ask --batch, ask_many, the API)
    strategy: str = "uniform"  # how frames are picked: a name in stanchat.video.STRATEGIES
    video_cache: int = 4  # encoded videos a VideoChat keeps (LRU): a video asked about again is not re-encoded
    segments: int = 4  # S windows of --temporal segments
    select: str = "uniform"  # one of SELECT_MODES
    candidates: int = 64  # frames scored against the question under select=question (1..MAX_CANDIDATES)


DEFAULTS = AskDefaults()


@dataclass(frozen=True)
class VideoOptions:
    """How a video becomes the LLM's video tokens: which frames are sampled and how they are encoded.
    Checked when made (one line naming the option); equal options give equal tokens, so they key the
    encoded-video cache (`stanchat.encoding`)."""

    frames: int = DEFAULTS.frames  # T frames sampled (strategy fps: at most this many)
    temporal: str = DEFAULTS.temporal  # one of TEMPORAL_MODES
    strategy: str = DEFAULTS.strategy  # uniform | random | fps (stanchat.video.sample)
    fps: float | None = None  # sampling rate for strategy fps
    start: float | None = None  # sample only the window [start, end) seconds
    end: float | None = None
    seed: int | None = None  # seeds strategy random
    segments: int = DEFAULTS.segments  # S windows under temporal segments (ignored otherwise)
    select: str = DEFAULTS.select  # uniform | question (needs the question: `VideoChat.encode(..., question=)`)
    candidates: int = DEFAULTS.candidates  # frames scored under select question (ignored otherwise)

    def __post_init__(self) -> None:
        from stanchat.video.sample import check_request  # light: no numpy at import

        check_temporal(self.temporal)
        if isinstance(self.frames, int) and not isinstance(self.frames, bool):
            check_frames(self.frames)
        check_request(self.frames, self.strategy, self.fps, self.start, self.end)
        if self.temporal == "segments":
            check_segments(self.segments, self.frames)
        if self.select not in SELECT_MODES:
            raise StanchatError(f"unknown --select {self.select!r}; choose one of {', '.join(SELECT_MODES)}",
                                param="select")
        if self.select == "question":
            check_candidates(self.candidates, self.frames, self.strategy)


VIDEO_OPTIONS = tuple(f.name for f in fields(VideoOptions))  # frames, temporal, ..., segments, select, candidates


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_segments(segments: int, frames: int) -> int:
    """Return `segments` if the `frames` frames can be split into that many windows of at least one frame."""
    if not _whole(segments) or segments < 1:
        raise StanchatError(f"--segments must be a whole number >= 1, got {segments!r}", param="segments")
    if _whole(frames) and segments > frames:
        raise StanchatError(f"--segments {segments} needs at least {segments} frames, got --frames {frames}; "
                            f"use --frames {segments} or more", param="segments")
    return segments


def check_candidates(candidates: int, frames: int, strategy: str) -> int:
    """Return `candidates` if question-guided selection can choose `frames` frames from that many."""
    if not _whole(candidates) or not 1 <= candidates <= MAX_CANDIDATES:
        raise StanchatError(f"--candidates must be a whole number from 1 to {MAX_CANDIDATES}, got {candidates!r}",
                            param="candidates")
    if _whole(frames) and candidates < frames:
        raise StanchatError(f"--candidates {candidates} is fewer than --frames {frames}; question-guided selection "
                            f"chooses the frames among the candidates: use --candidates {frames} or more",
                            param="candidates")
    if strategy != "uniform":
        raise StanchatError(f"--select question samples its candidates uniformly; drop --strategy {strategy}",
                            param="strategy")
    return candidates


def check_temporal(temporal: str) -> str:
    """Return `temporal` if it names a mode, else raise one line listing the modes."""
    if temporal not in TEMPORAL_MODES:
        raise StanchatError(f"unknown temporal mode {temporal!r}; choose one of {', '.join(TEMPORAL_MODES)}")
    return temporal


def check_frames(frames: int, max_frames: int | None = None) -> int:
    """Return `frames` if it is a usable frame count, else raise one line naming the range."""
    if frames < 1:
        raise StanchatError(lambda w: f"{w.name('frames')} must be at least 1, got {frames}", param="frames")
    if max_frames is not None and frames > max_frames:
        raise StanchatError(
            lambda w: f"{w.name('frames')} {frames} is more than the {max_frames} frames STAN's temporal embedding "
                      f"covers; {w.set('frames', max_frames)} or fewer", param="frames")
    return frames


def check_question(question: str) -> str:
    """Return the stripped question, refusing an empty one."""
    text = question.strip()
    if not text:
        raise StanchatError("the question is empty; ask something about the video, e.g. \"What happens?\"")
    return text
