"""Pixels of the synthetic world: numpy frames, still images with a motion trail, and the
video / PNG files they are written to.

Shapes are drawn with signed distance functions and a one-pixel soft edge, so a shape's
centroid moves smoothly with sub-pixel positions. Geometry comes from `ClipSpec.seed` only.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from stanchat.errors import StanchatError
from training.synthworld.world import COLOURS, DIRECTIONS, ClipSpec, Event, WorldConfig

# (dx, dy) unit step of each direction in image coordinates (y grows downwards)
_STEP = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


def render_clip(spec: ClipSpec, config: WorldConfig = WorldConfig()) -> np.ndarray:
    """The clip's frames, uint8 (T, H, W, 3) with T = config.frames and H = W = config.size.

    The T frames are split into len(spec.events) consecutive segments; each segment shows its
    event from local time u = 0 to u = 1.
    """
    rng = np.random.default_rng(spec.seed)
    plans = [_plan(event, rng, config.size) for event in spec.events]
    frames = np.empty((config.frames, config.size, config.size, 3), np.uint8)
    for plan, indices in zip(plans, np.array_split(np.arange(config.frames), len(spec.events))):
        for k, t in enumerate(indices):
            u = k / (len(indices) - 1) if len(indices) > 1 else 0.5
            canvas = _background(config)
            for actor, x, y, r, visible in _placements(plan, u):
                if visible:
                    _draw(canvas, actor.shape, COLOURS[actor.colour], x, y, r, alpha=1.0)
            frames[t] = np.round(canvas).astype(np.uint8)
    return frames


def has_still(spec: ClipSpec) -> bool:
    """Whether `render_still` can draw the clip: one event, a move, grow or shrink."""
    return len(spec.events) == 1 and spec.events[0].motion != "appear"


def render_still(spec: ClipSpec, config: WorldConfig = WorldConfig()) -> np.ndarray:
    """A still image, uint8 (H, W, 3), that shows a motion without time: the shape at the end of
    its motion, with `config.trail_steps - 1` fainter copies at earlier positions behind it.
    Grow/shrink copies are concentric, so every copy is drawn as an outline (a filled present
    shape would hide the smaller ones); the present outline is the thickest and opaque.
    The spec must hold one event that is not "appear"."""
    if not has_still(spec):
        raise StanchatError("a still needs a clip spec with one moving, growing or shrinking event and no distractor")
    plan = _plan(spec.events[0], np.random.default_rng(spec.seed), config.size)
    canvas = _background(config)
    steps, sizing = config.trail_steps, spec.events[0].motion not in DIRECTIONS
    for k in range(steps):
        u = k / (steps - 1) if steps > 1 else 1.0
        alpha = 0.15 + 0.85 * u**2  # oldest copy faintest, the present one opaque
        outline = (2.5 if k == steps - 1 else 1.5) if sizing else None
        for actor, x, y, r, _ in _placements(plan, u):
            _draw(canvas, actor.shape, COLOURS[actor.colour], x, y, r, alpha, outline)
    return np.round(canvas).astype(np.uint8)


def _background(config: WorldConfig) -> np.ndarray:
    return np.broadcast_to(np.asarray(config.background, np.float32), (config.size, config.size, 3)).copy()


def _plan(event: Event, rng: np.random.Generator, size: int) -> dict:
    """Where the event's actors start and end, in pixels: {"event", "start", "end"} with one
    (x, y, radius) per actor at u = 0 and u = 1."""
    if event.motion in DIRECTIONS:
        r = rng.uniform(0.09, 0.13) * size
        travel = rng.uniform(0.4, 0.55) * size
        lo, hi = r + 1, size - r - 1
        along = rng.uniform(lo + travel, hi)  # start far enough from the edge it moves towards
        across = rng.uniform(lo, hi)
        dx, dy = _STEP[event.motion]
        x0, y0 = (along if dx else across), (along if dy else across)
        x0, y0 = (size - x0 if dx > 0 else x0), (size - y0 if dy > 0 else y0)  # mirror for right/down
        return {"event": event, "start": [(x0, y0, r)], "end": [(x0 + dx * travel, y0 + dy * travel, r)]}
    if event.motion in ("grow", "shrink"):
        small, big = rng.uniform(0.06, 0.09) * size, rng.uniform(0.2, 0.26) * size
        x, y = rng.uniform(big + 1, size - big - 1, size=2)
        r0, r1 = (small, big) if event.motion == "grow" else (big, small)
        return {"event": event, "start": [(x, y, r0)], "end": [(x, y, r1)]}
    cells = rng.permutation(9)[: len(event.actors)]  # distinct cells of a 3x3 grid
    r = rng.uniform(0.08, 0.11) * size
    places = [((c % 3 + 0.5) * size / 3, (c // 3 + 0.5) * size / 3, r) for c in cells]
    return {"event": event, "start": places, "end": places}


def _placements(plan: dict, u: float):
    """(actor, x, y, radius, visible) of each actor at local time u in [0, 1]."""
    event = plan["event"]
    for i, (actor, (x0, y0, r0), (x1, y1, r1)) in enumerate(zip(event.actors, plan["start"], plan["end"])):
        # "appear": actor i shows from u = i / n on; moving actors are always visible
        visible = event.motion != "appear" or u >= i / len(event.actors) - 1e-9
        yield actor, x0 + (x1 - x0) * u, y0 + (y1 - y0) * u, r0 + (r1 - r0) * u, visible


def _draw(canvas: np.ndarray, shape: str, colour, x: float, y: float, r: float, alpha: float,
          outline: float | None = None) -> None:
    """Blend a shape of "radius" r centred at (x, y) into canvas (H, W, 3) float, in place;
    filled, or only a band `outline` pixels wide inside its edge."""
    size = canvas.shape[0]
    py, px = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    dx, dy = px - x, py - y
    if shape == "circle":
        sdf = np.hypot(dx, dy) - r
    elif shape == "square":
        sdf = np.maximum(abs(dx), abs(dy)) - 0.85 * r  # side 1.7 r: about the circle's area
    elif shape == "diamond":
        sdf = (abs(dx) + abs(dy) - 1.2 * r) / np.sqrt(2)
    else:  # triangle pointing up: three half-planes around an inradius of 0.76 r
        sdf = np.maximum.reduce([dy, 0.866 * dx - 0.5 * dy, -0.866 * dx - 0.5 * dy]) - 0.76 * r
    if outline is not None:
        sdf = abs(sdf + outline / 2) - outline / 2  # a band of width `outline` just inside the edge
    cover = (np.clip(0.5 - sdf, 0.0, 1.0) * alpha)[..., None]  # (H, W, 1), soft one-pixel edge
    canvas *= 1.0 - cover
    canvas += cover * np.asarray(colour, np.float32)


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 (T, H, W, 3) frames: `.mp4` as H.264 yuv420p, `.avi` as MPEG-4 Part 2."""
    import av  # PyAV: only the writers need it

    codecs = {".mp4": "libx264", ".avi": "mpeg4"}
    if path.suffix not in codecs:
        raise StanchatError(f"cannot write {path.suffix} videos; valid: {', '.join(codecs)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codecs[path.suffix], rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.thread_count = 1  # tiny frames: threads only cost start-up time
        if path.suffix == ".mp4":
            stream.options = {"crf": "15", "preset": "ultrafast"}
        else:
            stream.bit_rate = 2_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def write_image(path: Path, image: np.ndarray) -> None:
    """Save a uint8 (H, W, 3) image; the format follows the suffix (`.png` is lossless)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
