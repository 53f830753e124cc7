"""Decoders: given a probed source and sorted frame indices, return those pictures upright.

Every backend decodes only the requested frames: it seeks to the keyframe before each group of
wanted frames and decodes forward from there, converting (and resizing, inside the decoder's own
scaler) only the frames that are kept. So an 8K or two-hour video never has more than the requested
frames at the requested size in memory, besides the decoder's own reference pictures. Given a
`transform` (a `stanchat.video.fit.Fit`), a backend applies it to each picture as soon as that is
converted and upright, so it holds one picture at the decoded size at a time, and the kept frames
at the transformed size.

- pyav:   PyAV (FFmpeg). Matches decoded frames to the frame table by pts; when a file's pts cannot be
          trusted (e.g. AVI with packed B-frames, whose pts run backwards) it decodes from the start and
          numbers frames by counting.
- decord: decord's VideoReader. Refused, so the caller falls back, when its frame count differs from
          the container's real frame count (it can hang on such files, dmlc/decord#373), when its
          keyframes differ from the container's (open-GOP HEVC: it numbers keyframes in decode order and
          returns frames 3 off after a seek), when the container has no seek index (MPEG-TS/PS: it
          returns frames one GOP off) or when the video is rotated (it returns 4-channel or mis-sized
          pictures). Each of these was measured on generated clips (tests/video); the wrong frames are
          silent in decord, so they are refused up front rather than detected afterwards.
- pillow: still images and folders of frames (JPEGs are decoded at reduced scale via `draft`).

`BACKENDS` names the choices for video containers; images and folders always use pillow.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from stanchat.errors import VideoError
from stanchat.video.geometry import short_side_size
from stanchat.video.info import VideoInfo

if TYPE_CHECKING:  # numpy, PyAV, decord and Pillow load inside the functions that decode
    import numpy as np

logger = logging.getLogger(__name__)

# Packets in a row that may fail to decode before PyAV gives up on a file.
MAX_BAD_PACKETS = 32
# Above this many stored pixels (4K UHD) PyAV decodes with slice threads only: frame threads keep one
# picture per thread in flight, ~50 MB each at 8K (measured: 455 MiB peak vs 203 MiB, same speed).
# decord, which has no slice-only mode, decodes them on one thread: on its automatic count (one per
# core) 8 frames of 4000x4000 took +490 MB on 2 cores (+140 MB per more thread), on one +310 MB.
LARGE_PICTURE = 3840 * 2160


class BackendError(Exception):
    """A decoder failed on this input; the next backend in the chain may still succeed."""


Transform = Callable[["np.ndarray"], "np.ndarray"]  # one upright (H, W, 3) uint8 picture -> (h, w, 3) uint8


class Backend(Protocol):
    """A decoder. `decode` returns (len(indices), H, W, 3) uint8 RGB pictures, upright, in `indices` order."""

    name: str

    def decode(
        self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int] | None, tick: Callable[[], None],
        transform: Transform | None,
    ) -> np.ndarray:
        """`indices` are sorted and distinct; `size` is the (width, height) wanted as displayed, None
        for the stored size; `transform`, if not None, is applied to each upright picture as soon as it
        is decoded (the result holds its outputs); call `tick()` after each frame or group so the
        watchdog sees progress."""
        ...


def output_size(info: VideoInfo, size: int | None) -> tuple[int, int] | None:
    """Displayed (width, height) to decode to: shorter side `size`, or the display size when pixels
    are not square; None keeps the stored size."""
    if size is not None:
        return short_side_size(*info.display_size, size)
    return info.display_size if info.pixel_aspect != 1.0 else None


def keyframe_groups(keyframes: Sequence[int], indices: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Split sorted `indices` by the keyframe each is decoded from: [(keyframe, [indices...]), ...]."""
    groups: list[tuple[int, list[int]]] = []
    for i in indices:
        at = bisect.bisect_right(keyframes, i) - 1
        key = keyframes[at] if at >= 0 else 0  # before the first flagged keyframe: decode from the start
        if groups and groups[-1][0] == key:
            groups[-1][1].append(i)
        else:
            groups.append((key, [i]))
    return groups


def _upright(picture: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored (H, W, 3) picture counterclockwise by `rotation` degrees."""
    import numpy as np

    if rotation == 0:
        return picture
    return np.ascontiguousarray(np.rot90(picture, k=rotation // 90))


def _finisher(rotation: int, transform: Transform | None) -> Transform:
    """Stored (H, W, 3) picture -> the one to keep: upright, then transformed."""

    def finish(picture: np.ndarray) -> np.ndarray:
        picture = _upright(picture, rotation)
        return picture if transform is None else transform(picture)

    return finish


class _LostTrack(Exception):
    """Decoded frames cannot be matched to the frame table by pts; number them by counting instead."""


class PyAVBackend:
    """PyAV (FFmpeg) decoding: seek to keyframes, match frames by pts, resize in swscale."""

    name = "pyav"

    def decode(self, info, indices, size, tick, transform):
        import numpy as np

        if info.kind != "video":
            raise BackendError(f"pyav decodes video containers, not a {info.kind}")
        coded = size if size is None or info.rotation in (0, 180) else (size[1], size[0])  # stored orientation
        finish = _finisher(info.rotation, transform)

        def convert(frame) -> np.ndarray:  # av.VideoFrame -> the picture kept
            return finish(_picture(frame, coded))

        pictures = None
        if info.seekable:
            try:
                pictures = _decode_by_seeking(info, indices, convert, tick)
            except _LostTrack as why:
                logger.debug("%s: %s; decoding from the start and counting frames", info.path, why)
        if pictures is None:
            pictures = _decode_by_counting(info, indices, convert, tick)
        return np.stack([pictures[i] for i in indices])


def _open(info: VideoInfo):
    import av

    container = av.open(info.path, metadata_errors="ignore")
    stream = container.streams[info.stream_index]
    large = info.coded_width * info.coded_height > LARGE_PICTURE
    stream.thread_type = "SLICE" if large else "AUTO"  # AUTO: frame and slice threads
    return container, stream


def _frames(container, stream):
    """Decoded frames from the current position, skipping packets that fail to decode."""
    import av

    bad = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.FFmpegError as err:
            bad += 1
            if bad > MAX_BAD_PACKETS:
                raise BackendError(f"more than {MAX_BAD_PACKETS} packets in a row failed to decode ({err})") from None
            continue
        bad = 0
        yield from frames


def _picture(frame, coded: tuple[int, int] | None) -> np.ndarray:
    """One frame as stored-orientation RGB (H, W, 3), scaled by swscale while converting."""
    if coded is None:
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", width=coded[0], height=coded[1], interpolation="BICUBIC")


def _decode_by_seeking(info, indices, convert, tick) -> dict[int, np.ndarray]:
    import av

    lookup = {pts: i for i, pts in enumerate(info.pts)}
    pictures: dict[int, np.ndarray] = {}
    container, stream = _open(info)
    with container:
        for key, group in keyframe_groups(info.keyframes, indices):
            try:
                container.seek(info.pts[key], stream=stream, backward=True, any_frame=False)
            except av.FFmpegError as err:  # formats without seeking support
                raise _LostTrack(f"cannot seek ({err})") from None
            _decode_group(_frames(container, stream), lookup, group, convert, pictures, tick)
    return pictures


def _decode_group(frames, lookup, group, convert, pictures, tick) -> None:
    """Decode forward after a seek until every index in `group` is in `pictures`."""
    todo = sorted(group, reverse=True)  # smallest wanted index last, so todo[-1] is the next one due
    last = -1
    for frame in frames:
        i = lookup.get(frame.pts)
        if i is None or i < last:
            raise _LostTrack(f"decoded pts {frame.pts} is not in the frame table or runs backwards")
        if i > todo[-1]:
            raise _LostTrack(f"frame {todo[-1]} was skipped (the seek landed at frame {i})")
        last = i
        if i == todo[-1]:
            pictures[i] = convert(frame)
            todo.pop()
            if not todo:
                return
        tick()
    raise _LostTrack(f"frames {sorted(todo)} never came out of the decoder")


def _decode_by_counting(info, indices, convert, tick) -> dict[int, np.ndarray]:
    """Decode from the start; the n-th picture out of the decoder is frame n."""
    wanted = set(indices)
    pictures: dict[int, np.ndarray] = {}
    last_frame, count = None, 0
    container, stream = _open(info)
    with container:
        for count, frame in enumerate(_frames(container, stream), start=1):
            last_frame = frame
            if count - 1 in wanted:
                pictures[count - 1] = convert(frame)
                if len(pictures) == len(wanted):
                    return pictures
            tick()
        if last_frame is None:
            raise BackendError("no frame could be decoded")
        missing = sorted(wanted - pictures.keys())
        logger.warning("%s: only %d of %d frames decode; %s repeat the last one", info.path, count, info.count, missing)
        filler = convert(last_frame)
    return {**pictures, **{i: filler for i in missing}}


class DecordBackend:
    """decord's VideoReader, resizing inside its FFmpeg filter graph."""

    name = "decord"

    def decode(self, info, indices, size, tick, transform):

        if info.kind != "video":
            raise BackendError(f"decord decodes video containers, not a {info.kind}")
        if not info.indexed:
            raise BackendError("decord numbers frames wrongly in containers without a seek index (MPEG-TS/PS)")
        if info.rotation:
            raise BackendError(f"decord turns {info.rotation}-degree rotated video wrongly (4-channel, mis-sized frames)")
        try:
            import decord
        except ImportError:
            raise BackendError("decord is not installed (pip install decord)") from None
        width, height = size or (-1, -1)
        threads = 1 if info.coded_width * info.coded_height > LARGE_PICTURE else 0  # 0: one per core
        reader = decord.VideoReader(info.path, ctx=decord.cpu(0), width=width, height=height, num_threads=threads)
        if len(reader) != info.count:
            raise BackendError(f"decord counts {len(reader)} frames but the container holds {info.count}")
        keys = reader.get_key_indices()
        if list(keys) != info.keyframes:  # decord seeks by these: wrong ones give wrong frames silently
            raise BackendError(f"decord's keyframes {list(keys)[:4]}... are not the container's {info.keyframes[:4]}...")
        finish = _finisher(0, transform)  # rotated video was refused above
        pictures = []
        for _, group in keyframe_groups(info.keyframes, indices):
            for i in group:  # one frame per call: decord skips forward inside a GOP and seeks only across GOPs
                pictures.append(finish(reader.get_batch([i]).asnumpy()[0]))  # (1, H, W, 3) -> kept picture
                tick()
        del reader  # freed inside the watchdog's time: decord can also hang here (dmlc/decord#154)
        return _stack(pictures)


class PillowBackend:
    """Still images and folders of frames, turned upright by their EXIF orientation."""

    name = "pillow"

    def decode(self, info, indices, size, tick, transform):
        files = info.files if info.kind == "folder" else [info.path]
        target = size or info.display_size  # every frame of a folder gets the first frame's size
        finish = _finisher(0, transform)  # EXIF orientation is applied while loading
        pictures = []
        for i in indices:
            pictures.append(finish(_load_image(files[i], target)))
            tick()
        return _stack(pictures)


def _stack(pictures: list[np.ndarray]) -> np.ndarray:
    import numpy as np

    return np.stack(pictures)  # U x (H, W, 3) -> (U, H, W, 3)


def _load_image(path: str, target: tuple[int, int]) -> np.ndarray:
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.draft("RGB", (min(target), min(target)))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when enough
            img = ImageOps.exif_transpose(img).convert("RGB")
            if img.size != target:
                img = img.resize(target, Image.Resampling.BICUBIC)
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise VideoError(f"{path} is not a readable image ({err})") from None


PILLOW = PillowBackend()

# Decoders for video containers, by name.
BACKENDS: dict[str, Backend] = {"decord": DecordBackend(), "pyav": PyAVBackend()}
AUTO = ("decord", "pyav")  # backend="auto": decord first (fast seeking), PyAV when decord fails or stalls
