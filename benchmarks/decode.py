"""Decode benchmark: sampling 16 frames by seeking vs decoding every frame, decord vs PyAV, memory.

    python benchmarks/decode.py [--seconds 300] [--gop 250] [--frames 16] [--size 224]

Generates a 720p H.264 video (libx264 ultrafast, one keyframe every --gop frames, no B-frames) in a
temporary folder, then measures, each in a fresh process so its peak RSS is its own:
- decode every frame and convert every frame to RGB (what read-all loaders do: torchvision's
  read_video, decord's vr[:], an OpenCV loop), keeping only the sampled frames so it fits in memory;
- decode every frame and convert only the sampled ones (the best a sequential scan can do);
- stanchat's seeking decode with PyAV and with decord, in process and under the watchdog;
- `stanchat ask`'s decode + preprocess with frames fitted in the decode worker against full-size
  frames preprocessed in the main process, on a generated 1080p clip, time and peak RSS of both
  processes (benchmarks/fitted.py).
Every figure comes from this one run, printed with its ratio and the issue's target beside it.
Generation encodes two GOPs and repeats their packets with shifted timestamps: the decoder does
the same work as for a fully encoded video, and generating 5 minutes takes seconds, not a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: its stanchat and benchmarks

from benchmarks import fitted  # noqa: E402
from benchmarks.common import MIB, load_average, parser, peak_rss_bytes, run  # noqa: E402
from benchmarks.results import Figure, Result, Target  # noqa: E402
from stanchat.video import DEFAULT_TIMEOUT  # noqa: E402  (light: no numpy, PyAV or torch)

WIDTH, HEIGHT, FPS = 1280, 720, 30
SPEEDUP_TARGET = Target(">=", 10.0)  # issue 3: seeking at least 10x faster than decoding every frame


def generate(path: Path, seconds: int, gop: int, width: int = WIDTH, height: int = HEIGHT) -> float:
    """Write `seconds` of H.264 (720p unless told) to `path`; returns the seconds it took."""
    import av

    started = time.perf_counter()
    seed = path.with_name("seed.mp4")
    _encode(seed, frames=2 * gop, gop=gop, width=width, height=height)  # two GOPs: consecutive IDR frames differ
    with av.open(str(seed)) as source, av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        template = source.streams.video[0]
        stream = out.add_stream_from_template(template)
        packets = [(p.pts, p.dts, p.is_keyframe, bytes(p)) for p in source.demux(template) if p.size]
        span = round(len(packets) / FPS / template.time_base)  # the seed's length in its time base
        for copy in range(seconds * FPS // len(packets)):
            for pts, dts, key, data in packets:
                packet = av.Packet(data)
                packet.pts, packet.dts = pts + copy * span, dts + copy * span
                packet.time_base, packet.stream, packet.is_keyframe = template.time_base, stream, key
                out.mux(packet)
    seed.unlink()
    return time.perf_counter() - started


def _encode(path: Path, frames: int, gop: int, width: int, height: int) -> None:
    """libx264 ultrafast, a keyframe every `gop` frames, no B-frames: smooth waves scrolling sideways."""
    import av
    import numpy as np

    wave = (128 + 100 * np.sin(np.arange(2 * width) / 32)).astype(np.uint8)
    shade = (0.6 + 0.4 * np.arange(height) / height)[:, None]
    picture = (np.broadcast_to(wave, (height, 2 * width)) * shade).astype(np.uint8)  # (H, 2W) luma
    planes = np.empty((height * 3 // 2, width), np.uint8)  # yuv420p: Y, then the U and V quarter planes
    options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bframes": "0"}
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            shift = i * 3 % width
            planes[:height] = picture[:, shift : shift + width]
            planes[height:] = 128 + 40 * np.sin(i / 20)
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def _targets(path: str, frames: int) -> list[int]:
    from stanchat.video import DEFAULT_FOLDER_FPS
    from stanchat.video.probe import probe
    from stanchat.video.sample import frames_at, sample_times

    info = probe(path, DEFAULT_FOLDER_FPS)
    return frames_at(info.timestamps, sample_times(info.duration, frames, "uniform"))


def _full_decode(path: str, frames: int, size: int, convert_all: bool) -> None:
    """Decode every frame with PyAV; convert every frame (read-all) or only the sampled ones (scan)."""
    import av

    wanted = set(_targets(path, frames))
    kept = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if convert_all or i in wanted:
                picture = frame.to_ndarray(format="rgb24")
                if i in wanted:
                    kept.append(picture)
    assert len(kept) == len(wanted)


def _seek(path: str, frames: int, size: int, backend: str, timeout: float | None) -> None:
    from stanchat.video import load_video

    clip = load_video(path, frames, size=size, backend=backend, timeout=timeout)
    assert clip.decoder == backend and len(clip.frames) == frames


OPERATIONS = {  # name -> (video, frames, size): one measured call
    "read-all": lambda p, n, s: _full_decode(p, n, s, convert_all=True),
    "scan": lambda p, n, s: _full_decode(p, n, s, convert_all=False),
    "seek-pyav": lambda p, n, s: _seek(p, n, s, "pyav", None),
    "seek-decord": lambda p, n, s: _seek(p, n, s, "decord", None),
    "watchdog-pyav": lambda p, n, s: _seek(p, n, s, "pyav", DEFAULT_TIMEOUT),
    "tiny-in-process": lambda p, n, s: _seek(p, n, s, "pyav", None),
    "tiny-watchdog": lambda p, n, s: _seek(p, n, s, "pyav", DEFAULT_TIMEOUT),
    "full-size-pyav": lambda p, n, s: _seek(p, n, None, "pyav", None),
}


def _measure_here(operation: str, path: str, frames: int, size: int, repeat: int) -> dict:
    """Run one operation `repeat` times in this (fresh) process: wall and CPU seconds each, peak RSS.

    CPU seconds (user + system, all threads of this process) measure the work itself: on a shared
    machine they are far steadier than wall time. Work done in the decode worker is not counted."""
    import av  # noqa: F401  (loaded before the baseline so imports do not count as the operation's memory)
    import numpy  # noqa: F401

    import stanchat.video.backends  # noqa: F401

    before = peak_rss_bytes() / MIB
    seconds, cpu = [], []
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        OPERATIONS[operation](path, frames, size)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return {"seconds": seconds, "cpu": cpu, "baseline_mib": before, "peak_mib": peak_rss_bytes() / MIB}


def measure_operation(operation: str, path: Path, frames: int, size: int, repeat: int) -> dict:
    """`_measure_here` in a fresh interpreter (its peak RSS is the operation's own: exec resets VmHWM,
    and the parent, which generated the video, may have peaked higher)."""
    argv = [sys.executable, __file__, "--measure", operation, "--video", str(path), "--frames", str(frames),
            "--size", str(size), "--repeat", str(repeat)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def bad_inputs(folder: Path, video: Path) -> list[tuple[str, float, str]]:
    """Seconds to the one-line error for bad inputs (this process, watchdog on)."""
    from stanchat.errors import StanchatError
    from stanchat.video import load_video

    cases = {"missing": folder / "missing.mp4", "empty": folder / "empty.mp4", "text": folder / "notes.mp4",
             "truncated (first half)": folder / "half.mp4", "url": "http://example.com/v.mp4"}
    cases["empty"].write_bytes(b"")
    cases["text"].write_text("not a video\n")
    data = video.read_bytes()
    cases["truncated (first half)"].write_bytes(data[: len(data) // 2])
    results = []
    for name, path in cases.items():
        started = time.perf_counter()
        try:
            load_video(path, 16)
            message = "no error!"
        except StanchatError as err:
            message = str(err)
        results.append((name, time.perf_counter() - started, message))
    return results


def _best(result: dict) -> float:
    """The fastest of the repeated runs: on a shared machine the minimum is the least disturbed."""
    return min(result["seconds"])


def report(result: Result) -> None:
    """Print every figure with its ratio and the target."""
    data, results = result.data, result.data["results"]
    video, args = data["video"], data["args"]
    print(f"video: {video['seconds']} s of {WIDTH}x{HEIGHT} H.264 at {FPS} fps, {video['frames']} frames, keyframe every "
          f"{video['gop']} frames (no B-frames), {video['mib']:.1f} MiB, generated in {video['generation_s']:.1f} s")
    print(f"task: sample {args['frames']} frames (uniform segment middles), returned at {args['size']} px shorter side")
    load = [f"{x:.2f}" if x is not None else "?" for x in data["load"]]
    print(f"machine: {os.cpu_count()} CPU cores, load average {load[0]} before and {load[1]} after; "
          "times are the fastest of the repeats (CPU: user + system time of all threads)\n")
    seek, seek_cpu = _best(results["seek-pyav"]), min(results["seek-pyav"]["cpu"])
    print(f"{'method':<54}{'wall':>8}{'CPU':>8}{'seeking is (wall, CPU)':>25}{'peak RSS':>10}")
    for key, label in METHODS.items():
        wall, cpu = _best(results[key]), min(results[key]["cpu"])
        ratio = f"{wall / seek:.1f}x, {cpu / seek_cpu:.1f}x faster" if key in BASELINES else ""
        print(f"{label:<54}{wall:>7.2f}s{cpu:>7.2f}s{ratio:>25}{results[key]['peak_mib']:>6.0f} MiB")
    result.print_figures()
    count, decoded = video["frames"], min(video["frames"], args["frames"] * video["gop"] // 2)
    print(f"  bound: a sample lies on average {video['gop'] // 2} frames after its keyframe, so seeking decodes about "
          f"{decoded} of {count} frames: at most ~{count / decoded:.1f}x less decoding than a scan")
    guarded, direct = results["tiny-watchdog"]["seconds"], _best(results["tiny-in-process"])
    print(f"watchdog (16 frames of a 2 s 320x240 clip): in process {direct * 1e3:.0f} ms; under the watchdog the first "
          f"call takes {guarded[0] * 1e3:.0f} ms (starts the worker), later calls {min(guarded[1:]) * 1e3:.0f} ms: "
          f"{(min(guarded[1:]) - direct) * 1e3:+.0f} ms per call")
    warm = min(results["watchdog-pyav"]["seconds"][1:])  # the first run started the worker
    print(f"  the {video['seconds']} s video under the watchdog: {warm:.2f} s vs {seek:.2f} s in process")
    print("memory: " + result.notes[-1])
    print("\nbad input: time to the one-line error (watchdog on):")
    for name, seconds, message in data["errors"]:
        print(f"  {name:<24}{seconds:>6.2f} s  {message}")
    if data["eight_k"]:
        print("\n" + data["eight_k"])


METHODS = {"read-all": "decode every frame, convert every frame (read-all)",
           "scan": "decode every frame, convert only the sampled (scan)",
           "seek-pyav": "stanchat seek, PyAV", "seek-decord": "stanchat seek, decord"}
BASELINES = {"read-all": "decoding (and converting) every frame", "scan": "a scan converting only the sampled"}


def eight_k(folder: Path, frames: int, size: int) -> str:
    """Memory for an 8K source: sampled at model size vs at full size (opt-in: generating takes ~30 s)."""
    video = folder / "eight-k.mp4"
    took = generate(video, seconds=4, gop=FPS, width=7680, height=4320)
    small = measure_operation("seek-pyav", video, frames, size, 1)
    full = measure_operation("full-size-pyav", video, frames, size, 1)
    clip = frames * size * int(size * 16 / 9) * 3 / 2**20
    return (f"8K (7680x4320, 4 s, generated in {took:.0f} s), {frames} frames with PyAV: at {size} px the peak RSS is "
            f"{small['peak_mib']:.0f} MiB (clip {clip:.1f} MiB; the rest is the interpreter and the decoder's 8K "
            f"reference pictures), at full size {full['peak_mib']:.0f} MiB (clip {frames * 7680 * 4320 * 3 / 2**20:.0f} MiB)")


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--seconds", type=int, default=300, help="video length (default: 300)")
    p.add_argument("--gop", type=int, default=250, help="frames between keyframes (default: 250, x264's default)")
    p.add_argument("--frames", type=int, default=16, help="frames to sample (default: 16)")
    p.add_argument("--size", type=int, default=224, help="shorter side of the sampled frames (default: 224)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each seeking measurement (default: 3)")
    p.add_argument("--watchdog-repeat", type=int, default=20, help="loads (at least 2) of a tiny clip, in process and under the "
                   "watchdog, for its cost per call (default: 20)")
    p.add_argument("--eight-k", action="store_true", help="also measure memory on a generated 8K video (~1 min)")
    p.add_argument("--fit-seconds", type=int, default=16, help="length of the 1080p and 240p clips for the fitted-frames "
                   "rows (default: 16; a keyframe every second, as phones record)")
    p.add_argument("--fit-frames", type=int, default=16, help="frames for the fitted-frames speed rows (default: 16)")
    p.add_argument("--fit-memory-frames", type=int, default=64, help="frames for the 1080p vs 240p memory row (default: 64)")
    p.add_argument("--fit-repeat", type=int, default=5, help="turns of each path (full-size, fitted) for the "
                   "fitted-frames speed row, after a warm-up turn (default: 5)")
    p.add_argument("--measure", choices=list(OPERATIONS), help=argparse.SUPPRESS)
    p.add_argument("--measure-fit", choices=fitted.CASES, help=argparse.SUPPRESS)
    p.add_argument("--video", help=argparse.SUPPRESS)
    return p


def measure(args: argparse.Namespace) -> Result:
    """Generate the video, run every operation in its own process, and time the bad inputs."""
    import av

    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        video, tiny = Path(tmp) / "long-720p.mp4", Path(tmp) / "tiny.mp4"
        generation = generate(video, args.seconds, args.gop)
        _encode(tiny, frames=2 * FPS, gop=FPS, width=320, height=240)
        with av.open(str(video)) as container:
            count = container.streams.video[0].frames
        plan = {"seek-pyav": (video, args.repeat), "seek-decord": (video, args.repeat), "scan": (video, 2),
                "read-all": (video, 2), "watchdog-pyav": (video, args.repeat + 1),
                "tiny-in-process": (tiny, args.watchdog_repeat), "tiny-watchdog": (tiny, args.watchdog_repeat)}
        results = {op: measure_operation(op, path, args.frames, args.size, repeat) for op, (path, repeat) in plan.items()}
        errors = bad_inputs(Path(tmp), video)
        data = {"args": vars(args), "results": results, "errors": errors, "load": [load_before, load_average()],
                "video": {"seconds": args.seconds, "gop": args.gop, "frames": count,
                          "mib": video.stat().st_size / MIB, "generation_s": generation}}
        video.unlink()
        data["fit"] = _measure_fit(Path(tmp), args)
        data["eight_k"] = eight_k(Path(tmp), args.frames, args.size) if args.eight_k else ""
    return _result(data)


def _measure_fit(folder: Path, args: argparse.Namespace) -> dict:
    """The fitted-frames rows' measurements on a 1080p and a 426x240 clip, a keyframe every second."""
    hd, small = folder / "fit-1080p.mp4", folder / "fit-240p.mp4"
    generate(hd, args.fit_seconds, FPS, width=1920, height=1080)
    generate(small, args.fit_seconds, FPS, width=426, height=240)
    return fitted.measure_all(__file__, hd, small, args.fit_frames, args.fit_memory_frames, args.fit_repeat)


def _result(data: dict) -> Result:
    """The figures: seeking against decoding every frame, decord against PyAV, memory."""
    results, args, count = data["results"], data["args"], data["video"]["frames"]
    minutes = f"{data['video']['seconds'] / 60:g}-minute 720p clip"
    result = Result("decode", "Video decoding (sampling 16 frames)", data=data,
                    setup=f"{args['frames']} frames sampled from a generated {minutes} ({count} frames, keyframe every "
                          f"{args['gop']}), {args['size']} px; fastest of the repeats, each method in a fresh process")
    seek, seek_cpu = _best(results["seek-pyav"]), min(results["seek-pyav"]["cpu"])
    decoded = min(count, args["frames"] * args["gop"] // 2)  # a sample lies gop/2 frames after its keyframe on average
    for key, what in BASELINES.items():
        wall, cpu = _best(results[key]), min(results[key]["cpu"])
        bound = f"; seeking decodes ~{decoded} of {count} frames ({count / decoded:.1f}x fewer)" if key == "scan" else ""
        result.figures.append(Figure(f"seeking vs {what} (speed-up, PyAV)", wall / seek, "x",
                                     SPEEDUP_TARGET if key == "read-all" else None,
                                     detail=f"{wall:.2f} s vs {seek:.2f} s wall; {cpu / seek_cpu:.1f}x in CPU time{bound}"))
    decord, decord_cpu = _best(results["seek-decord"]), min(results["seek-decord"]["cpu"])
    result.figures.append(Figure("PyAV / decord seek time", seek / decord, "x",
                                 detail=f"{seek:.2f} s vs {decord:.2f} s wall; {seek_cpu / decord_cpu:.2f}x in CPU time"))
    for key, label in (("seek-pyav", "PyAV"), ("seek-decord", "decord"), ("read-all", "read-all")):
        result.figures.append(Figure(f"peak RSS, {label}", results[key]["peak_mib"], "MiB",
                                     detail=f"{results[key]['baseline_mib']:.0f} MiB of it is the interpreter and libraries"))
    fitted.add_figures(result, data["fit"], args["fit_frames"], args["fit_memory_frames"])
    direct, guarded = _best(results["tiny-in-process"]), min(results["tiny-watchdog"]["seconds"][1:])
    result.figures.append(Figure("watchdog cost per call (2 s 320x240 clip)", guarded - direct, "s",
                                 detail=f"{guarded * 1e3:.0f} ms vs {direct * 1e3:.0f} ms in process"))
    result.notes.append("The target compares seeking with a full decode as read-all loaders do it (torchvision's "
                        "read_video, decord's vr[:], an OpenCV loop: every frame decoded and converted to RGB). A scan "
                        "that converts only the sampled frames still decodes every frame; against it seeking can win at "
                        "most the ratio of frames decoded, bounded by the keyframe interval.")
    held = args["frames"] * args["size"] * int(args["size"] * WIDTH / HEIGHT) * 3 / MIB
    result.notes.append(f"seeking peaks at {results['seek-pyav']['peak_mib']:.0f} MiB RSS with PyAV, "
                        f"{results['seek-decord']['peak_mib']:.0f} MiB with decord; the returned clip is {held:.1f} MiB. "
                        f"Keeping every frame, as read-all loaders do, would need {count * WIDTH * HEIGHT * 3 / 2**30:.1f} "
                        f"GiB (computed, not run).")
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.measure:  # child process: one measurement, printed as JSON
        print(json.dumps(_measure_here(args.measure, args.video, args.frames, args.size, args.repeat)))
        return 0
    if args.measure_fit:
        print(json.dumps(fitted.measure_here(args.measure_fit, args.video, args.frames, args.repeat)))
        return 0
    return run(build_parser(), measure, report, argv)


if __name__ == "__main__":
    sys.exit(main())
