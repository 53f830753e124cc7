"""Clips the tests generate with PyAV: every frame carries its own index as a row of black/white
blocks, so a test can read back which frame a decoder really returned."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

os.environ.setdefault("SVT_LOG", "1")  # the AV1 encoder prints a banner to stderr unless told not to

BITS = 8  # index code: 8 blocks of BLOCK x BLOCK px along the top edge, most significant bit first
BLOCK = 8


def frame_image(index: int, width: int, height: int) -> np.ndarray:
    """The RGB picture of frame `index`: (height, width, 3) uint8, its index coded in the top row."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 2] = np.linspace(40, 200, width, dtype=np.uint8)[None, :]  # a blue ramp under the code
    for bit in range(BITS):
        if index >> (BITS - 1 - bit) & 1:
            image[:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 255
    image[-BLOCK:, :BLOCK] = (255, 0, 0)  # a red block at the stored bottom-left: shows rotation
    return image


def read_index(image: np.ndarray) -> int:
    """Read the index code back from an RGB frame of the stored (unrotated) orientation."""
    value = 0
    for bit in range(BITS):
        block = image[1 : BLOCK - 1, bit * BLOCK + 1 : (bit + 1) * BLOCK - 1]  # inner pixels: no edge ringing
        value = value << 1 | int(block.mean() > 128)
    return value


def make_clip(
    path: Path,
    codec: str = "libx264",
    frames: int = 30,
    fps: int = 25,
    width: int = 64,
    height: int = 48,
    options: dict[str, str] | None = None,
    pts: list[int] | None = None,
    rotation: int | None = None,
    audio: bool = False,
    pix_fmt: str | None = None,
    pixel_aspect: Fraction | None = None,
) -> Path:
    """Encode `frames` coded frames into `path` (the container follows the suffix).

    `pts` gives each frame's timestamp in 1/fps units (default 0, 1, 2, ...): gaps make a variable
    frame rate. `rotation` sets the display matrix (degrees counterclockwise). `pix_fmt` overrides
    the codec's usual pixel format (e.g. yuv420p10le). `pixel_aspect` sets the sample aspect ratio
    (non-square pixels: a player shows width * pixel_aspect columns).
    """
    pts = list(range(frames)) if pts is None else pts
    pix_fmt = pix_fmt or {"gif": "rgb8", "mjpeg": "yuvj420p", "apng": "rgb24"}.get(codec, "yuv420p")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = Fraction(1, fps)
        if pixel_aspect is not None:
            stream.codec_context.sample_aspect_ratio = pixel_aspect
        if rotation is not None:
            stream.set_display_rotation(rotation)
        sound = container.add_stream("aac", rate=16000) if audio else None  # every stream before the first mux
        for i, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if sound is not None:
            _mux_silence(container, sound, seconds=(pts[-1] + 1) / fps)
    return path


def _mux_silence(container, stream, seconds: float) -> None:
    samples = int(seconds * stream.rate)
    for start in range(0, samples, 1024):
        chunk = np.zeros((1, min(1024, samples - start)), np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.rate, frame.pts = stream.rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An .m4a/.mp4 file with one AAC stream and no video."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        _mux_silence(container, stream, seconds)
    return path


def make_empty_video(path: Path, codec: str = "libx264") -> Path:
    """A container whose video stream has no frames at all (zero duration). AVI keeps such a
    stream in its header (MP4 and MOV drop it, Matroska writes nothing readable)."""
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
        container.mux(stream.encode())
    return path


def drop_first_packets(source: Path, path: Path, count: int) -> Path:
    """Remux `source` without its first `count` packets: a stream cut in the middle of a GOP."""
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        stream = src.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for n, packet in enumerate(src.demux(stream)):
            if n >= count and packet.size:
                packet.stream = copy
                out.mux(packet)
    return path


def split_hidden_frames(source: Path, path: Path) -> Path:
    """Remux a VP9 `source` with each hidden (alt-ref) frame in a block of its own, as some muxers
    write them, instead of packed into a superframe with the next shown frame. A hidden frame gets
    the pts of the shown frame it was packed with (its superframe's)."""
    from av.bitstream import BitStreamFilterContext

    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        stream = src.streams.video[0]
        copy = out.add_stream_from_template(stream)
        out.flags &= ~av.container.Flags.auto_bsf.value  # else the muxer packs them into superframes again
        split = BitStreamFilterContext("vp9_superframe_split", stream)
        packets = [q for p in src.demux(stream) for q in split.filter(p if p.size else None)]
        packets += split.filter(None)
        for n, packet in enumerate(packets):
            if packet.pts is None:
                shown = next(q for q in packets[n + 1 :] if q.pts is not None)
                packet.pts = packet.dts = shown.pts
            packet.stream = copy
            out.mux(packet)
    return path


def count_packets(path: Path) -> int:
    """Video packets (blocks) in a container, hidden frames included."""
    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(container.streams.video[0]) if p.size)
