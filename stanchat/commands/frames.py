"""Show the frames (and timestamps) the model will see: decode, sample, and optionally save them.

Prints a table of frame numbers and times, or one JSON object with --json; --out DIR writes the
frames as PNG files named with their timestamps (frame03_0004.367s.png): the shorter side resized
to --size and, with --crop (the default), the centre square, as LLaVA-1.5's processor crops (up to
the resize filter). The LLaVA-NeXT presets squash the whole frame to a square instead; `stanchat
serve` shows each frame as the loaded model's processor prepares it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_SIZE = 336  # LLaVA-1.5's CLIP ViT-L/14-336 input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stanchat.commands._shared import add_sampling_arguments
    from stanchat.video import AUTO, BACKENDS, DEFAULT_FOLDER_FPS, DEFAULT_TIMEOUT

    parser.add_argument("video", help="video file, still image, GIF or folder of frames (local; URLs are not read)")
    parser.add_argument("--frames", type=int, default=16, metavar="N", help="number of frames T (default: %(default)s)")
    add_sampling_arguments(parser)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="PX", help="shorter side in pixels (default: %(default)s)")
    parser.add_argument(
        "--crop", action=argparse.BooleanOptionalAction, default=True,
        help="centre-crop to a square, as LLaVA-1.5's processor does (LLaVA-NeXT's squashes the whole frame instead)",
    )
    parser.add_argument("--backend", choices=["auto", *BACKENDS], default="auto", help=f"auto: {' then '.join(AUTO)}")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SEC", help="kill a decoder stuck this long (default: %(default)s)")
    parser.add_argument("--folder-fps", type=float, default=DEFAULT_FOLDER_FPS, help="frame rate of a folder of frames")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="write the frames as PNGs into DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    from stanchat.commands._shared import sampling
    from stanchat.outputs import make_out_dir
    from stanchat.video import load_video

    if args.out is not None:
        make_out_dir(args.out)  # before decoding: a bad --out is one line
    clip = load_video(
        args.video, args.frames, **sampling(args),
        size=args.size, backend=args.backend, timeout=args.timeout, folder_fps=args.folder_fps,
    )
    pictures = _center_square(clip.frames, args.size) if args.crop else clip.frames
    files = _write_pngs(pictures, clip.timestamps, args.out) if args.out is not None else []
    if args.json:
        print(json.dumps({**clip.summary(), **({"files": [str(f) for f in files]} if files else {})}))
        return 0
    print(f"{clip.path}: {clip.width}x{clip.height}, {clip.fps:.2f} fps, {clip.duration:.2f} s, "
          f"{clip.source_frames} frames; decoded with {clip.decoder}")
    print(f"{'#':>4}  {'frame':>7}  {'time (s)':>9}")
    for k, (index, stamp) in enumerate(zip(clip.indices, clip.timestamps)):
        print(f"{k:>4}  {index:>7}  {stamp:>9.3f}")
    if files:
        print(f"wrote {len(files)} PNGs ({pictures.shape[2]}x{pictures.shape[1]}) to {args.out}")
    return 0


def _center_square(frames, size: int):
    """(T, H, W, 3) with min(H, W) == size -> (T, size, size, 3), LLaVA-1.5's processor's centre crop."""
    from stanchat.video.geometry import center_crop_box

    left, top = center_crop_box(frames.shape[2], frames.shape[1], size, size)
    return frames[:, top : top + size, left : left + size]


def _write_pngs(pictures, timestamps: list[float], out: Path) -> list[Path]:
    from PIL import Image

    from stanchat.errors import StanchatError

    width = len(str(len(timestamps) - 1))
    files = []
    for k, (picture, stamp) in enumerate(zip(pictures, timestamps)):
        files.append(out / f"frame{k:0{width}d}_{stamp:08.3f}s.png")  # e.g. frame03_0001.867s.png
        try:
            Image.fromarray(picture).save(files[-1])
        except OSError as err:  # e.g. the disk filled up, or a folder of that name is in the way
            raise StanchatError(f"--out {out}: cannot write {files[-1].name} ({err}); free space or pick another folder") from err
    return files
