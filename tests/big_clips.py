"""Large-frame H.264 clips made cheaply for the servers' memory and limit tests.

Frames are written as YUV planes (no RGB conversion of a 4000x4000 picture) with a flat picture,
so that x264 (ultrafast) spends little time and the file stays small (8 frames of 4000x4000: about
0.5 MB); `repeat` makes a long clip by copying a short one's packets with later timestamps, so that a
slow decode costs the test no encoding.
"""

from __future__ import annotations

from pathlib import Path


def write_big_clip(path: str | Path, width: int, height: int, frames: int = 8, fps: int = 8) -> Path:
    """`frames` frames of width x height, each a flat colour of its own, every one decodable alone
    after the first (ultrafast has no B-frames)."""
    import av
    import numpy as np

    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "45"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            for k, plane in enumerate(frame.planes):  # (Y, U, V), each line_size x rows bytes
                plane.update(np.full(plane.buffer_size, 60 + 40 * k + 5 * i, np.uint8))
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def repeat(source: str | Path, path: str | Path, copies: int) -> Path:
    """`source`'s video packets `copies` times over, one copy after another in time."""
    import av

    path = Path(path)
    with av.open(str(source)) as given, av.open(str(path), "w") as out:
        stream = given.streams.video[0]
        copy = out.add_stream_from_template(stream)
        packets = [packet for packet in given.demux(stream) if packet.size]
        length = packets[-1].pts - packets[0].pts + packets[1].pts - packets[0].pts  # the clip's span, time base units
        for k in range(copies):
            for packet in packets:
                packet.pts += length if k else 0  # the same packet objects each copy: offsets add up
                packet.dts += length if k else 0
                packet.stream = copy
                out.mux(packet)
    return path
