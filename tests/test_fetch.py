"""First use fetches: a preset's released STAN (and LLaVA v1) from a hub cache the test writes itself.

HF_HUB_OFFLINE=1 throughout (tests/conftest.py): every file comes from the cache folder below, laid
out as huggingface_hub's cache, or is missing as it would be on an offline machine; the `online`
fixture puts a hub with downloads behind it (tests.hub_cache.FakeHub) for a first pull on an empty cache.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from huggingface_hub import try_to_load_from_cache

import stanchat.convert.released as released
from stanchat.cli import main
from stanchat.convert import to_released_state_dict
from stanchat.fetch import STOCK_NOT_CACHED, TOWER_FILES, disk_size, ensure_stan, size_text
from stanchat.pretrained import CLIP_CONFIG_FILES, get_preset, preset_names, stan_is_converted
from tests.hub_cache import FakeHub, put, use_cache
from tests.convert.test_convert_llava import write_original, write_tower
from tests.tiny import tiny_clip
from tests.tiny_llava import error_line, save_tiny_llava, tiny_videoclip, write_video

REPO, FILE = "farewellthree/Mug_STAN_Weight", "Mug-StanL14.bin"
CLIP_REPO, LLAVA_REPO = "openai/clip-vit-large-patch14", "llava-hf/llava-1.5-7b-hf"
V1_REPO = "mmaaz60/LLaVA-7B-Lightening-v1-1"


def released_bytes(wrap=lambda state: state, seed: int = 0) -> bytes:
    """A tiny Mug-STAN checkpoint in the released layout (fits the tiny LLaVA's 32-wide tower)."""
    buffer = io.BytesIO()
    torch.save(wrap(to_released_state_dict(tiny_videoclip(seed))), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    clip_dir = root / "clip"
    tiny_clip().config.save_pretrained(clip_dir)
    return {"llava": save_tiny_llava(root / "llava"), "clip": clip_dir, "video": write_video(root / "clip.mp4"),
            "released": released_bytes()}


@pytest.fixture
def hub(tmp_path, monkeypatch, parts):
    """An empty hub cache and $STANCHAT_HOME; `hub.add()` stores the preset's files in it."""
    cache = use_cache(monkeypatch, tmp_path / "hub")
    monkeypatch.setenv("STANCHAT_HOME", str(tmp_path / "home"))

    class Hub:
        home = tmp_path / "home"

        def add(self, checkpoint: bytes | None = None, revision: str = "main"):
            put(cache, REPO, {FILE: parts["released"] if checkpoint is None else checkpoint}, revision)
            put(cache, CLIP_REPO, parts["clip"])
            put(cache, LLAVA_REPO, parts["llava"])
            return self

    return Hub()


def moved_tower(path: Path, value: bytes | None = None) -> Path:
    """Stock CLIP weights for the released file's tower: the same tiny tower with one weight moved by
    0.25 (or `value`, other bytes), as model.safetensors in `path`."""
    from safetensors.torch import save_file

    stock = {k: v.clone().contiguous() for k, v in tiny_clip().state_dict().items()}  # the released file's tower
    stock["vision_model.encoder.layers.1.mlp.fc1.weight"][3, 5] += 0.25
    path.mkdir(parents=True, exist_ok=True)
    save_file(stock, path / "model.safetensors")
    if value is not None:
        (path / "model.safetensors").write_bytes(value)
    return path / "model.safetensors"


@pytest.fixture
def online(hub, parts, tmp_path, monkeypatch):
    """Every file the presets fetch, on a hub with downloads behind the empty cache: the released file
    (main, and v2 with other weights), the stock CLIP (config, image processor, weights), the LLaVA-1.5
    and the original LLaVA v1 reading that CLIP as its tower."""
    write_tower(tmp_path / "tower")  # for its preprocessor_config.json (16 px, as the tiny tower)
    write_original(tmp_path / "v1", CLIP_REPO)
    clip = {"config.json": parts["clip"] / "config.json", "model.safetensors": moved_tower(tmp_path / "stock"),
            "preprocessor_config.json": tmp_path / "tower" / "preprocessor_config.json"}
    repos = {REPO: {FILE: parts["released"]}, f"{REPO}@v2": {FILE: released_bytes(seed=7)}, CLIP_REPO: clip,
             LLAVA_REPO: {str(p.relative_to(parts["llava"])): p for p in parts["llava"].rglob("*") if p.is_file()},
             V1_REPO: {p.name: p for p in (tmp_path / "v1").iterdir()}}
    return FakeHub(monkeypatch, hub.home.parent / "hub", repos)


def hub_bytes(online: FakeHub, repo: str, names) -> int:
    files = online.repos[repo]
    return sum(len(files[n]) if isinstance(files[n], bytes) else files[n].stat().st_size for n in names if n in files)


def ask(parts, *extra):
    return ["ask", str(parts["video"]), "What happens?", "--frames", "4", "--max-new-tokens", "3", "--json", *extra]


def test_first_ask_fetches_and_converts_then_later_asks_only_load(hub, parts, capsys, monkeypatch):
    hub.add()
    conversions = []
    convert = released.convert_official
    monkeypatch.setattr(released, "convert_official", lambda *a, **k: conversions.append(a) or convert(*a, **k))
    assert main(ask(parts)) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["preset"] == "llava-1.5-7b" and first["video_tokens"] == 4 and len(conversions) == 1
    stan = hub.home / "mug-stan-l14"
    origin = json.loads((stan / "origin.json").read_text())
    assert (origin["repo"], origin["filename"], origin["revision"]) == (REPO, FILE, "main")
    assert origin["backbone_vs_stock"] == {"stock": CLIP_REPO, "measured": False,
                                           "why": "the stock weights are not in the local hub cache"}
    assert not list(hub.home.glob("mug-stan-l14.*"))  # no unfinished or set-aside folder left
    written = (stan / "model.safetensors").stat().st_mtime_ns
    assert main(ask(parts)) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == first["answer"]
    assert len(conversions) == 1 and (stan / "model.safetensors").stat().st_mtime_ns == written


def test_no_weights_offline_names_the_repo_file_and_commands(hub, parts, capsys):
    assert main(ask(parts)) == 2
    line = error_line(capsys.readouterr().err)
    assert REPO in line and FILE in line
    assert f"`hf download {REPO} {FILE}`" in line and "`stanchat convert official FILE --clip" in line
    assert "stanchat pull llava-1.5-7b" in line
    assert not (hub.home / "mug-stan-l14").exists()


def test_the_offline_line_is_enough_to_convert_offline(hub, parts, capsys):
    """Doing what the offline line says: each `hf download REPO FILES` it names stores those of the
    files the hub has (this cache stands in for the hub; nothing else is put in it), then its
    `stanchat convert official` runs offline and `ask` answers."""
    assert main(ask(parts)) == 2
    commands = re.findall(r"`([^`]+)`", error_line(capsys.readouterr().err))
    on_the_hub = {REPO: {FILE: parts["released"]}, CLIP_REPO: {p.name: p for p in parts["clip"].iterdir()}}
    cache, checkpoint = hub.home.parent / "hub", None
    for repo, *names in (command.split()[2:] for command in commands if command.startswith("hf download ")):
        snapshot = put(cache, repo, {name: on_the_hub[repo][name] for name in names if name in on_the_hub[repo]})
        checkpoint = snapshot / FILE if repo == REPO else checkpoint
    assert checkpoint is not None and "config.json" in next(c for c in commands if CLIP_REPO in c).split()
    convert = next(c for c in commands if c.startswith("stanchat convert official"))
    assert main([str(checkpoint) if arg == "FILE" else arg for arg in shlex.split(convert)[1:]]) == 0
    capsys.readouterr()
    put(cache, LLAVA_REPO, parts["llava"])
    assert main(ask(parts)) == 0
    assert json.loads(capsys.readouterr().out)["video_tokens"] == 4


@pytest.mark.parametrize("content, message", [
    (released_bytes()[:3000], "not a PyTorch checkpoint"),
    (released_bytes(lambda s: {"head.weight": torch.zeros(2, 2)}), "not a Mug-STAN checkpoint"),
])
def test_a_truncated_or_foreign_cached_file_is_one_line(hub, parts, capsys, content, message):
    hub.add(checkpoint=content)
    assert main(ask(parts)) == 2
    line = error_line(capsys.readouterr().err)
    assert message in line and f"{REPO}/{FILE}" in line and "--force-download" in line
    assert not (hub.home / "mug-stan-l14").exists() and not list(hub.home.glob("mug-stan-l14.*"))


@pytest.mark.parametrize("wrap", [
    lambda s: {"state_dict": s, "meta": {"epoch": 5}},
    lambda s: {"model": {"state_dict": {"module." + k: v for k, v in s.items()}}},
    lambda s: {"model." + k: v for k, v in s.items()},
], ids=["state_dict", "model>state_dict>module.", "model."])
def test_the_wrapper_is_detected(hub, parts, capsys, wrap):
    hub.add(checkpoint=released_bytes(wrap))
    assert main(ask(parts)) == 0
    assert json.loads(capsys.readouterr().out)["video_tokens"] == 4


def test_pull_fetches_ahead_and_revision_pins_another(hub, parts, capsys):
    hub.add()
    put(hub_cache := hub.home.parent / "hub", REPO, {FILE: released_bytes(seed=7)}, revision="v2")
    assert hub_cache.is_dir()
    assert main(["pull", "llava-1.5-7b"]) == 0
    out = capsys.readouterr().out
    converted = hub.home / "mug-stan-l14"
    assert f"STAN ({FILE} from {REPO}, main): fetched, {converted} ({size_text(disk_size(converted))})" in out
    released = try_to_load_from_cache(REPO, FILE)  # the released file in the hub cache, where pull says it is
    assert f"  from {FILE} from {REPO} (main): found in the hub cache, {released} " \
           f"({size_text(len(parts['released']))})" in out
    assert f"  from {CLIP_REPO} (config.json, " in out and f"LLaVA {LLAVA_REPO}: already here" in out
    assert main(["pull", "llava-1.5-7b"]) == 0
    again = capsys.readouterr().out
    assert "STAN mug-stan-l14: already here" in again and f"LLaVA {LLAVA_REPO}: already here" in again
    main_weights = (hub.home / "mug-stan-l14" / "model.safetensors").read_bytes()
    assert main(["pull", "llava-1.5-7b", "--revision", "v2"]) == 0
    assert json.loads((hub.home / "mug-stan-l14" / "origin.json").read_text())["revision"] == "v2"
    assert (hub.home / "mug-stan-l14" / "model.safetensors").read_bytes() != main_weights


def test_a_fresh_pull_says_which_files_it_downloaded_and_counts_only_those(online, hub, capsys):
    """The v1 preset on an empty cache: the STAN step downloads the CLIP's config files, and the LLaVA
    step then downloads the tower's weights beside them (some of its files cached, one not: downloaded).
    A later conversion finds the config files cached, and counts their bytes, not the weights beside them."""
    assert main(["pull", "llava-v1-7b-lightening"]) == 0
    out = capsys.readouterr().out
    snapshot = Path(try_to_load_from_cache(CLIP_REPO, "config.json")).parent
    configs = f"  from {CLIP_REPO} ({', '.join(CLIP_CONFIG_FILES)}): "
    assert f"{configs}downloaded, {snapshot} ({size_text(hub_bytes(online, CLIP_REPO, CLIP_CONFIG_FILES))})" in out
    assert f"  from {CLIP_REPO} ({', '.join(TOWER_FILES)}): downloaded, {snapshot} " \
           f"({size_text(hub_bytes(online, CLIP_REPO, TOWER_FILES))})" in out
    assert f"  from {V1_REPO}: downloaded" in out and (CLIP_REPO, "model.safetensors") in online.downloaded
    assert main(["pull", "llava-v1-7b-lightening", "--revision", "v2"]) == 0  # converts the STAN again
    again = capsys.readouterr().out
    assert f"{configs}found in the hub cache, {snapshot} " \
           f"({size_text(hub_bytes(online, CLIP_REPO, CLIP_CONFIG_FILES))})" in again
    assert "LLaVA llava-v1-7b-lightening-hf: already here" in again


def test_a_converted_stan_is_checked_once_before_loading(hub, monkeypatch):
    """Each load of a converted STAN pinned to a revision reads its origin.json once, and takes no lock:
    a resolved spec with the STAN there is not checked again by `ensure`."""
    import fcntl

    import stanchat.pretrained as pretrained
    from stanchat.fetch import ensure

    hub.add()
    preset = get_preset("llava-1.5-7b")
    ensure_stan(preset, revision="main")
    reads, read_origin = [], pretrained.read_origin
    monkeypatch.setattr(pretrained, "read_origin", lambda directory: reads.append(directory) or read_origin(directory))
    monkeypatch.setattr(fcntl, "flock", lambda *a: pytest.fail("locked to load a converted STAN"))
    assert not ensure_stan(preset, revision="main").new
    assert reads == [hub.home / "mug-stan-l14"]
    assert ensure(pretrained.resolve("llava-1.5-7b", revision="main")).missing == ()
    assert reads == [hub.home / "mug-stan-l14"] * 2


def test_two_first_uses_at_once_convert_once_and_both_get_the_folder(hub, monkeypatch):
    """`serve` and `ask` started together on a fresh machine: the second waits at the lock while the
    first converts (the first goes on only once the second is at the lock), then loads its result."""
    import fcntl
    import threading

    hub.add()
    inside, second_at_lock = threading.Event(), threading.Event()
    flock, convert, conversions, results = fcntl.flock, released.convert_official, [], {}

    def watched_flock(handle, operation):
        if operation == fcntl.LOCK_EX and threading.current_thread().name == "second":
            second_at_lock.set()
        return flock(handle, operation)

    def converting(*args, **kwargs):
        conversions.append(threading.current_thread().name)
        inside.set()
        second_at_lock.wait(timeout=30)  # never set without a lock: then both convert and the test fails
        return convert(*args, **kwargs)

    def use():
        try:
            results[threading.current_thread().name] = ensure_stan(get_preset("llava-1.5-7b"))
        except Exception as err:  # reported below, not lost in the thread
            results[threading.current_thread().name] = err

    monkeypatch.setattr(fcntl, "flock", watched_flock)
    monkeypatch.setattr(released, "convert_official", converting)
    first = threading.Thread(target=use, name="first")
    first.start()
    assert inside.wait(timeout=60)
    second = threading.Thread(target=use, name="second")
    second.start()
    first.join()
    second.join()
    assert conversions == ["first"]
    assert results["first"].new and not results["second"].new, results
    assert results["second"].path == hub.home / "mug-stan-l14" and stan_is_converted(hub.home / "mug-stan-l14")
    assert not list(hub.home.glob("mug-stan-l14.*"))


def test_a_crash_while_installing_a_new_conversion_keeps_the_old_one(hub, parts, monkeypatch):
    """Replacing a conversion (here: --revision v2) sets the old folder aside before the new one is
    renamed in; a crash between the two leaves it aside, and the next use puts it back unconverted."""
    import os

    hub.add()
    put(hub.home.parent / "hub", REPO, {FILE: released_bytes(seed=7)}, revision="v2")
    preset, out = get_preset("llava-1.5-7b"), hub.home / "mug-stan-l14"
    ensure_stan(preset)
    weights = (out / "model.safetensors").read_bytes()
    replace = os.replace

    def crash_on_install(source, target):
        if Path(target) == out:
            raise KeyboardInterrupt  # the process dies just before the new conversion is renamed in
        return replace(source, target)

    monkeypatch.setattr(os, "replace", crash_on_install)
    with pytest.raises(KeyboardInterrupt):
        ensure_stan(preset, revision="v2")
    monkeypatch.setattr(os, "replace", replace)
    assert not out.exists() and list(hub.home.glob("mug-stan-l14.old-*"))  # the crash window: set aside, not lost
    monkeypatch.setattr(released, "convert_official", lambda *a, **k: pytest.fail("converted again"))
    again = ensure_stan(preset)
    assert not again.new and (out / "model.safetensors").read_bytes() == weights
    assert not list(hub.home.glob("mug-stan-l14.*"))


def test_models_lists_every_preset_with_its_pairing_and_presence(hub, parts, capsys):
    assert main(["models", "--json"]) == 0
    entries = {e["preset"]: e for e in map(json.loads, capsys.readouterr().out.splitlines())}
    assert sorted(entries) == preset_names()
    for name, entry in entries.items():
        assert entry["stan_trained_on"] and entry["runs_on"], name
    v1 = entries["llava-v1-7b-lightening"]
    assert v1["pairing"] == "paper" and "a closer pairing, not identical" in v1["note"]
    for entry in entries.values():  # the released STAN: tuned tower, layers 20-23; every graft: layers 19-22
        if entry["preset"] != "tiny":
            assert "whole tower tuned" in entry["stan_trained_on"] and "layers 20-23" in entry["stan_trained_on"]
            assert "layers 19-22" in entry["runs_on"] and "feature layer -2" in entry["runs_on"]
    assert entries["llava-1.5-7b"]["pairing"] == "transfer" and not entries["llava-1.5-7b"]["stan_present"]
    assert entries["llava-1.5-7b"]["missing_bytes"] > 1e9
    hub.add()
    assert main(["pull", "llava-1.5-7b"]) == 0 and main(["models"]) == 0
    text = capsys.readouterr().out
    assert "llava-1.5-7b (default)" in text and "a transfer" in text
    assert "the paper's tower, 224 px: closer, not identical" in text
    assert main(["models", "--json"]) == 0
    entry = {e["preset"]: e for e in map(json.loads, capsys.readouterr().out.splitlines())}["llava-1.5-7b"]
    assert entry["stan_present"] and entry["llava_present"] and entry["missing_bytes"] == 0


def test_origin_records_how_far_the_released_tower_is_from_a_cached_stock_tower(hub, capsys, tmp_path):
    """With the stock CLIP weights in the hub cache, the conversion records the largest difference
    between the checkpoint's vision tower and them (here: the same tiny tower, one weight moved by 0.25),
    and `stanchat models` shows it."""
    hub.add()
    put(hub.home.parent / "hub", CLIP_REPO, {"model.safetensors": moved_tower(tmp_path)})
    assert main(["pull", "llava-1.5-7b"]) == 0
    measured = json.loads((hub.home / "mug-stan-l14" / "origin.json").read_text())["backbone_vs_stock"]
    vision = [k for k in tiny_clip().state_dict() if k.startswith("vision_model.") and not k.endswith("position_ids")]
    assert measured["measured"] and measured["tensors"] == len(vision)
    assert measured["max_abs_diff"] == pytest.approx(0.25, rel=1e-5)
    capsys.readouterr()
    assert main(["models"]) == 0
    assert f"differs from stock {CLIP_REPO} by up to 0.25 (largest |difference| over {len(vision)} tensors)" \
        in capsys.readouterr().out


def backbone(hub) -> dict:
    return json.loads((hub.home / "mug-stan-l14" / "origin.json").read_text())["backbone_vs_stock"]


def test_a_fresh_pull_of_the_v1_preset_measures_the_tower_its_llava_step_fetched(online, hub):
    """On an empty cache the STAN is converted before the LLaVA v1 step downloads the stock tower:
    the tower is measured once that step has fetched it."""
    assert main(["pull", "llava-v1-7b-lightening"]) == 0
    assert (CLIP_REPO, "model.safetensors") in online.downloaded
    assert backbone(hub)["measured"] and backbone(hub)["max_abs_diff"] == pytest.approx(0.25, rel=1e-5)


def test_a_stan_converted_for_another_preset_is_measured_when_the_stock_tower_arrives(online, hub, capsys, monkeypatch):
    """llava-1.5 never fetches the 224 px stock tower: not measured. The v1 preset shares its STAN
    (not converted again) and fetches that tower: measured then, and `stanchat models` shows it."""
    assert main(["pull", "llava-1.5-7b"]) == 0
    assert backbone(hub) == {"stock": CLIP_REPO, "measured": False, "why": STOCK_NOT_CACHED}
    monkeypatch.setattr(released, "convert_official", lambda *a, **k: pytest.fail("converted again"))
    assert main(["pull", "llava-v1-7b-lightening"]) == 0
    assert backbone(hub)["measured"] and backbone(hub)["max_abs_diff"] == pytest.approx(0.25, rel=1e-5)
    capsys.readouterr()
    assert main(["models"]) == 0 and f"differs from stock {CLIP_REPO} by up to 0.25" in capsys.readouterr().out


def test_an_unreadable_stock_tower_is_recorded_as_not_measured(hub, parts, capsys, tmp_path):
    """A truncated stock model.safetensors in the hub cache: the STAN still converts, origin.json
    says why the tower was not measured, and no unfinished folder is left."""
    hub.add()
    put(hub.home.parent / "hub", CLIP_REPO, {"model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\""})
    assert main(["pull", "llava-1.5-7b"]) == 0
    record = backbone(hub)
    assert not record["measured"] and record["why"].startswith("cannot compare with the cached stock weights")
    assert not list(hub.home.glob("mug-stan-l14.*")) and stan_is_converted(hub.home / "mug-stan-l14")
    assert main(["pull", "llava-1.5-7b"]) == 0 and backbone(hub) == record  # not tried again on every use


def test_the_paper_pairing_preset_pulls_and_converts_llava_v1(hub, parts, capsys, tmp_path):
    """`llava-v1-7b-lightening` in one command: the released STAN and the original LLaVA v1 (its
    tower from mm_vision_tower) fetched from the cache and converted once each."""
    tower = tmp_path / "tower"
    write_tower(tower)
    write_original(tmp_path / "v1", "openai/clip-vit-large-patch14")
    hub.add()
    put(tmp_path / "hub", CLIP_REPO, {**{p.name: p for p in tower.iterdir()}, "config.json": tower / "config.json"})
    put(tmp_path / "hub", V1_REPO, tmp_path / "v1")
    assert main(ask(parts, "--model", "llava-v1-7b-lightening")) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["preset"] == "llava-v1-7b-lightening" and answer["video_tokens"] == 4
    assert (hub.home / "llava-v1-7b-lightening-hf" / "config.json").is_file()


def test_the_v1_preset_offline_names_its_repo_and_the_convert_command(hub, parts, capsys):
    hub.add()
    assert main(ask(parts, "--model", "llava-v1-7b-lightening")) == 2
    line = error_line(capsys.readouterr().err)
    assert V1_REPO in line and "stanchat convert llava DIR --out" in line


def test_an_uncached_llava_offline_is_one_line_naming_its_download(hub, parts, capsys):
    put(hub.home.parent / "hub", REPO, {FILE: parts["released"]})
    put(hub.home.parent / "hub", CLIP_REPO, parts["clip"])
    assert main(ask(parts)) == 2
    assert f"`hf download {LLAVA_REPO}`" in error_line(capsys.readouterr().err)
