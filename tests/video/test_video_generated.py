"""Decoding clips the tests generate: every frame codes its own index, so we check the real pictures."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GENERATED, GENERATED_FRAMES
from PIL import Image
from videogen import drop_first_packets, frame_image, make_clip, read_index

from stanchat.errors import StanchatError
from stanchat.video import load_video
from tests.floats import MILLISECOND

T = 8


def _check_clip(clip, frames=T):
    assert clip.frames.shape[0] == len(clip.indices) == len(clip.timestamps) == frames
    assert clip.frames.dtype == np.uint8 and clip.frames.shape[-1] == 3
    assert all(b >= a for a, b in zip(clip.timestamps, clip.timestamps[1:]))
    assert all(0 <= t < clip.duration for t in clip.timestamps)


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_pyav_returns_the_sampled_frames(generated, name):
    clip = load_video(generated[name], T, backend="pyav")
    _check_clip(clip)
    assert clip.decoder == "pyav" and clip.source_frames == GENERATED_FRAMES
    assert clip.indices == [int((i + 0.5) * GENERATED_FRAMES / T) for i in range(T)]  # TSN segment middles
    assert [read_index(f) for f in clip.frames] == clip.indices  # the pictures really are those frames
    assert clip.timestamps == pytest.approx([i / 25 for i in clip.indices], **MILLISECOND)
    assert (clip.width, clip.height, clip.fps) == (64, 48, pytest.approx(25, rel=1e-3))


@pytest.mark.parametrize("name", sorted(n for n, (_, _, ok) in GENERATED.items() if ok))
def test_decord_matches_pyav(generated, name):
    by_pyav = load_video(generated[name], T, backend="pyav")
    by_decord = load_video(generated[name], T, backend="decord")
    assert by_decord.decoder == "decord"
    assert by_decord.indices == by_pyav.indices and by_decord.timestamps == by_pyav.timestamps
    assert [read_index(f) for f in by_decord.frames] == by_decord.indices
    assert np.abs(by_decord.frames.astype(int) - by_pyav.frames).mean() < 3  # same pictures, both converters


@pytest.mark.parametrize("name", sorted(n for n, (_, _, ok) in GENERATED.items() if not ok))
def test_auto_falls_back_to_pyav_where_decord_fails(generated, name):
    clip = load_video(generated[name], T)  # backend="auto": decord first
    assert clip.decoder == "pyav"
    assert [read_index(f) for f in clip.frames] == clip.indices


def test_decord_refuses_mpegts_instead_of_returning_wrong_frames(generated):
    with pytest.raises(StanchatError, match="seek index"):
        load_video(generated["h264.ts"], T, backend="decord")


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_every_frame_when_t_equals_n(generated, backend):
    clip = load_video(generated["h264.mp4"], GENERATED_FRAMES, backend=backend)
    assert clip.indices == list(range(GENERATED_FRAMES))
    assert [read_index(f) for f in clip.frames] == clip.indices


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_fewer_frames_than_t_repeat(tmp_path, backend):
    path = make_clip(tmp_path / "three.mp4", frames=3)
    clip = load_video(path, T, backend=backend)
    _check_clip(clip)
    assert clip.indices == [0, 0, 0, 1, 1, 2, 2, 2]
    assert [read_index(f) for f in clip.frames] == clip.indices


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_single_frame_video(tmp_path, backend):
    clip = load_video(make_clip(tmp_path / "one.mp4", frames=1), 4, backend=backend)
    assert clip.indices == [0, 0, 0, 0] and clip.source_frames == 1
    assert clip.duration == pytest.approx(1 / 25) and read_index(clip.frames[0]) == 0


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_rotation_metadata_turns_frames_upright(tmp_path, rotation):
    path = make_clip(tmp_path / "rotated.mov", frames=12, rotation=rotation)
    clip = load_video(path, 4)  # auto: decord refuses rotated video, PyAV turns it
    assert clip.decoder == "pyav"
    turns = rotation // 90 % 4  # counterclockwise quarter turns
    assert (clip.width, clip.height) == ((48, 64) if turns % 2 else (64, 48))
    assert clip.frames.shape[1:3] == (clip.height, clip.width)
    stored = np.rot90(clip.frames, k=-turns, axes=(1, 2))  # undo the turn: the code is readable again
    assert [read_index(f) for f in stored] == clip.indices
    red = np.argwhere((clip.frames[0, :, :, 0] > 200) & (clip.frames[0, :, :, 1] < 60))
    corner = (red.mean(0) > np.array(clip.frames.shape[1:3]) / 2).tolist()  # [in bottom half, in right half]
    # the red block sits bottom-left in the stored picture; a counterclockwise turn carries it round
    assert corner == {0: [True, False], 1: [True, True], 2: [False, True], 3: [False, False]}[turns]
    resized = load_video(path, 4, size=24)
    assert resized.frames.shape[1:3] == ((32, 24) if turns % 2 else (24, 32))


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_variable_frame_rate_samples_evenly_in_time(tmp_path, backend):
    # 30 frames in the first second, then 10 frames one every 0.5 s (pts in 1/30 s units)
    pts = list(range(30)) + [30 + 15 * k for k in range(10)]
    path = make_clip(tmp_path / "vfr.mkv", frames=len(pts), fps=30, pts=pts)
    clip = load_video(path, 6, backend=backend)
    assert clip.duration == pytest.approx(pts[-1] / 30 + 1 / clip.fps, **MILLISECOND)
    expected = [(i + 0.5) * clip.duration / 6 for i in range(6)]
    assert all(0 <= want - got < 0.5 + 1e-3 for want, got in zip(expected, clip.timestamps))  # the frame on screen
    assert [read_index(f) for f in clip.frames] == clip.indices
    assert sum(t < 1 for t in clip.timestamps) == 1  # not 5 of 6 samples, as index-uniform sampling would take


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_size_resizes_while_decoding(generated, backend):
    clip = load_video(generated["h264.mkv"], 4, size=24, backend=backend)
    assert clip.frames.shape == (4, 24, 32, 3)  # shorter side 24, aspect 4:3 kept
    assert (clip.width, clip.height) == (64, 48)  # the source's size is still reported
    big = load_video(generated["h264.mkv"], 4, size=96, backend=backend)
    assert big.frames.shape == (4, 96, 128, 3)


@pytest.mark.parametrize("suffix", [".mkv", ".ts"])
def test_a_stream_cut_mid_gop_starts_at_its_first_decodable_frame(tmp_path, generated, suffix):
    cut = drop_first_packets(generated["h264.mkv"], tmp_path / f"cut{suffix}", count=5)  # keyframe 12 survives
    clip = load_video(cut, T)  # decord counts the undecodable frames too: auto falls back to PyAV
    assert clip.decoder == "pyav" and clip.source_frames == GENERATED_FRAMES - 12 and clip.timestamps[0] >= 0
    assert [read_index(f) for f in clip.frames] == [12 + i for i in clip.indices]


def test_audio_track_does_not_disturb_frames(tmp_path):
    path = make_clip(tmp_path / "with-audio.mp4", frames=30, audio=True)
    clip = load_video(path, 5)
    assert [read_index(f) for f in clip.frames] == clip.indices == [3, 9, 15, 21, 27]


def test_still_images_are_one_frame_videos(tmp_path):
    picture = frame_image(37, 64, 48)
    for name in ("still.png", "still.jpg"):
        Image.fromarray(picture).save(tmp_path / name, quality=95)
        clip = load_video(tmp_path / name, 3)
        assert clip.decoder == "pillow" and clip.indices == [0, 0, 0] and clip.timestamps == [0.0] * 3
        assert (clip.duration, clip.fps, clip.width, clip.height) == (0.0, 0.0, 64, 48)
        assert read_index(clip.frames[2]) == 37


def test_jpeg_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(frame_image(5, 64, 48))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    clip = load_video(tmp_path / "phone.jpg", 1)
    assert (clip.width, clip.height) == (48, 64) and clip.frames.shape[1:3] == (64, 48)
    assert read_index(np.rot90(clip.frames[0], k=1)) == 5


def test_folder_of_frames_in_natural_order(tmp_path):
    for i in range(12):
        Image.fromarray(frame_image(i, 64, 48)).save(tmp_path / f"frame_{i + 1}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    clip = load_video(tmp_path, 4, folder_fps=4.0)
    assert clip.decoder == "pillow" and clip.source_frames == 12
    assert clip.indices == [1, 4, 7, 10] and [read_index(f) for f in clip.frames] == clip.indices
    assert clip.timestamps == [0.25, 1.0, 1.75, 2.5] and clip.duration == 3.0 and clip.fps == 4.0


def test_random_strategy_is_repeatable_with_a_seed(generated):
    a = load_video(generated["h264.mp4"], T, "random", generator=7)
    b = load_video(generated["h264.mp4"], T, "random", generator=np.random.default_rng(7))
    c = load_video(generated["h264.mp4"], T, "random", generator=8)
    assert a.indices == b.indices != c.indices
    assert all(i * 5 <= k < (i + 1) * 5 for i, k in enumerate(a.indices))  # one per segment of 5 frames
    assert [read_index(f) for f in a.frames] == a.indices


def test_fps_strategy_and_window(generated):
    clip = load_video(generated["vp9.webm"], 100, "fps", fps=10.0, start=0.5, end=1.0)
    assert clip.indices == [12, 15, 17, 20, 22]  # on screen at 0.5, 0.6, ... 0.9 s (frames every 0.04 s)
    assert [read_index(f) for f in clip.frames] == clip.indices
    thinned = load_video(generated["h264.mp4"], 4, "fps", fps=25.0)
    assert thinned.indices == [5, 15, 25, 35]  # 40 grid times thinned evenly to 4: the end is kept


def test_in_process_decoding_matches_the_watchdog(generated):
    guarded = load_video(generated["h264.mp4"], T)
    direct = load_video(generated["h264.mp4"], T, timeout=None)
    assert direct.indices == guarded.indices and np.array_equal(direct.frames, guarded.frames)
