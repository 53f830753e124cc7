"""Which VP8/VP9 packets show a picture: hidden (alt-ref) frames are references, not frames.

libvpx codes hidden alt-ref frames that a decoder uses as references but never displays. Most
muxers pack each one with the next shown frame into one packet (a VP9 superframe), but some write
it as a block of its own, often with the pts of the frame it precedes. Counted as frames, those
blocks make a 72-frame clip look like 80 frames with duplicate timestamps, so the frame table
would run past the real end. `shows_frame` reads the frame headers (VP8 RFC 6386 section 9.1,
VP9 bitstream spec sections 6.2 and B.3) and tells the two apart without decoding.
"""

from __future__ import annotations

HIDDEN_FRAME_CODECS = ("vp8", "vp9")  # codecs whose packets may hold only a hidden frame


def shows_frame(codec: str, data: bytes | memoryview) -> bool:
    """True when the packet displays a picture (always True for other codecs and unreadable data)."""
    if codec == "vp8":
        return len(data) == 0 or bool(data[0] >> 4 & 1)  # frame tag bit 4: show_frame
    if codec == "vp9":
        return any(_vp9_shows(frame) for frame in _vp9_frames(data))
    return True


def _vp9_frames(data: bytes | memoryview) -> list[memoryview]:
    """The frames of a VP9 packet: those listed in its superframe index, else the packet itself."""
    data = memoryview(data)
    if not data:
        return [data]
    marker = data[-1]
    if marker & 0xE0 != 0xC0:  # no superframe index
        return [data]
    count, size_bytes = (marker & 0x7) + 1, (marker >> 3 & 0x3) + 1
    index_size = 2 + size_bytes * count
    if len(data) < index_size or data[-index_size] != marker:
        return [data]
    frames, offset, at = [], 0, len(data) - index_size + 1
    for _ in range(count):
        size = int.from_bytes(data[at : at + size_bytes], "little")
        at += size_bytes
        frames.append(data[offset : offset + size])
        offset += size
    return frames


def _vp9_shows(frame: memoryview) -> bool:
    """Read the uncompressed header's first bits: frame_marker, profile, show_existing_frame, ..., show_frame."""
    if len(frame) < 1:
        return True
    bits = int.from_bytes(frame[:2], "big") if len(frame) >= 2 else frame[0] << 8
    if bits >> 14 != 0b10:  # not a frame header we can read: count it rather than lose a frame
        return True
    profile = (bits >> 13 & 1) | (bits >> 12 & 1) << 1  # profile_low_bit, then profile_high_bit
    at = 12 if profile < 3 else 11  # next bit position below 16 (profile 3 has a reserved zero bit)
    if bits >> (at - 1) & 1:  # show_existing_frame: shows a frame decoded earlier
        return True
    return bool(bits >> (at - 3) & 1)  # skip frame_type, read show_frame
