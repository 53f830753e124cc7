"""Released Mug-STAN checkpoint conversion: round trips, liberal reading, one-line refusals."""

import math
import pickle
import tempfile
from pathlib import Path

import pytest
import torch

from stanchat.cli import main
from stanchat.convert import (
    load_official,
    normalise_keys,
    released_name,
    stan_config_from_released,
    to_released_state_dict,
)
from stanchat.errors import WeightsError
from stanchat.stan import STANConfig
from stanchat.videoclip import VideoCLIP
from tests.tiny import randomise, tiny_clip


def tiny_video_clip(depth: int = 2, seed: int = 1) -> VideoCLIP:
    return randomise(VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=depth)), seed).eval()


@pytest.fixture
def model():
    return tiny_video_clip()


@pytest.fixture
def clip_dir(tmp_path):
    """A --clip directory: the tiny CLIP's config.json plus a tokenizer file to be copied along."""
    directory = tmp_path / "clip"
    tiny_clip().config.save_pretrained(directory)
    (directory / "vocab.json").write_text('{"a": 0}')
    return directory


def assert_same_model(a: VideoCLIP, b: VideoCLIP) -> None:
    """Bit-exact: the same weights run through the same kernels give the same bits on any machine."""
    assert a.state_dict().keys() == b.state_dict().keys()
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    video, ids = torch.randn(2, 3, 3, 16, 16), torch.randint(3, 99, (2, 6))
    with torch.no_grad():
        assert torch.equal(a.encode_video(video), b.encode_video(video))
        assert torch.equal(a.encode_text(ids)[0], b.encode_text(ids)[0])


def convert(*args) -> int:
    return main(["convert", "official", *map(str, args)])


def load_official_from(state, model, depth=None):
    """Save `state` as a .pth file and load it with `model`'s CLIP config."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pth"
        torch.save(state, path)
        return load_official(path, model.config.clip, depth=depth)


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "module."])
def test_released_layout_round_trip_is_bit_exact(model, clip_dir, tmp_path, wrap):
    state = to_released_state_dict(model)
    saved = {"raw": state, "state_dict": {"state_dict": state, "meta": {"epoch": 3}}, "model": {"model": state},
             "module.": {"module." + k: v for k, v in state.items()}}[wrap]
    torch.save(saved, tmp_path / "Mug-Stan.bin")
    assert convert(tmp_path / "Mug-Stan.bin", "--clip", clip_dir, "--out", tmp_path / "out") == 0
    loaded = VideoCLIP.from_pretrained(tmp_path / "out")
    assert loaded.config.stan == STANConfig(depth=2) and loaded.config.clip == model.config.clip
    assert (tmp_path / "out" / "vocab.json").read_text() == '{"a": 0}'
    assert_same_model(model.eval(), loaded.eval())


def test_released_names_follow_the_release():
    assert released_name("clip.vision_model.encoder.layers.3.mlp.fc1.weight") == "backbone.layers.3.mlp.fc1.weight"
    assert released_name("clip.vision_model.embeddings.class_embedding") == "backbone.class_embedding"
    assert released_name("stan.temporal_layers.1.temporal_fc.bias") == "backbone.STAN_T_layers.1.temporal_fc.bias"
    assert released_name("stan.spatial_layers.0.self_attn.q_proj.weight") == "backbone.STAN_S_layers.0.self_attn.q_proj.weight"
    assert released_name("stan.time_embed.weight") == "backbone.STAN_time_embed.weight"
    assert released_name("clip.text_model.final_layer_norm.bias") == "text_backbone.text_model.final_layer_norm.bias"
    assert released_name("clip.text_projection.weight") == "text_backbone.text_projection.weight"
    with pytest.raises(KeyError):
        released_name("stan.input_projs.0.weight")


def test_input_projections_have_no_released_form():
    projected = VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2, input_projection=True))
    with pytest.raises(ValueError, match="no STAN input projections"):
        to_released_state_dict(projected)


def test_liberal_spellings_are_accepted(model):
    state = to_released_state_dict(model)
    state["backbone.position_embedding"] = state.pop("backbone.position_embedding.weight")  # raw parameter
    state["backbone.embeddings.class_embedding"] = state.pop("backbone.class_embedding")
    for key in [k for k in state if k.startswith("text_backbone.text_model.")]:  # transformers-5 text names
        state[key.replace("text_backbone.text_model.", "text_backbone.")] = state.pop(key)
    state["text_backbone.text_model.embeddings.position_ids"] = torch.arange(16)[None]  # old persistent buffer
    del state["logit_scale"]
    loaded = load_official_from(state, model)
    assert loaded.clip.logit_scale.item() == pytest.approx(math.log(100.0))
    loaded.clip.logit_scale.data.copy_(model.clip.logit_scale)
    assert_same_model(model, loaded)


def test_depth_is_inferred_and_checked():
    deep = tiny_video_clip(depth=3)
    state = normalise_keys(to_released_state_dict(deep))
    assert stan_config_from_released(state) == STANConfig(depth=3, end_layer=-1, max_frames=64)
    assert load_official_from(to_released_state_dict(deep), deep, depth=3).config.stan.depth == 3
    with pytest.raises(WeightsError, match="--depth 2 does not match .* holds 3 STAN layers"):
        load_official_from(to_released_state_dict(deep), deep, depth=2)


def test_unknown_and_missing_keys_are_named(model):
    state = to_released_state_dict(model)
    state["backbone.STAN_extra.weight"] = torch.zeros(3)
    del state["backbone.STAN_T_layers.1.temporal_fc.bias"]
    with pytest.raises(WeightsError) as err:
        load_official_from(state, model)
    message = str(err.value)
    assert "unknown keys: backbone.STAN_extra.weight" in message
    assert "missing keys: backbone.STAN_T_layers.1.temporal_fc.bias" in message
    assert "\n" not in message


def test_wrong_clip_architecture_names_the_mismatch(model, tmp_path):
    torch.save(to_released_state_dict(model), tmp_path / "ckpt.bin")
    three_layers = tiny_clip(layers=3).config.to_dict()
    with pytest.raises(WeightsError, match=r"does not fit .*unknown keys: backbone\.layers\.3\."):
        load_official(tmp_path / "ckpt.bin", three_layers)


def run_cli_error(capsys, *args) -> str:
    assert convert(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("stanchat: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_non_mug_stan_checkpoint_is_one_clear_error(clip_dir, tmp_path, capsys):
    torch.save(tiny_clip().state_dict(), tmp_path / "clip.bin")
    err = run_cli_error(capsys, tmp_path / "clip.bin", "--clip", clip_dir, "--out", tmp_path / "out")
    assert "not a Mug-STAN checkpoint" in err and "backbone.STAN_S_layers" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"definitely not a checkpoint" * 20, b"PK\x03\x04broken zip"])
def test_garbage_file_is_one_clear_error(clip_dir, tmp_path, capsys, content):
    (tmp_path / "junk.bin").write_bytes(content)
    err = run_cli_error(capsys, tmp_path / "junk.bin", "--clip", clip_dir, "--out", tmp_path / "out")
    assert "not a PyTorch checkpoint" in err


def test_missing_file_and_list_payload_are_clear_errors(clip_dir, tmp_path, capsys):
    err = run_cli_error(capsys, tmp_path / "nope.bin", "--clip", clip_dir, "--out", tmp_path / "out")
    assert "does not exist" in err
    torch.save([torch.zeros(2)], tmp_path / "list.bin")
    err = run_cli_error(capsys, tmp_path / "list.bin", "--clip", clip_dir, "--out", tmp_path / "out")
    assert "not a state dict" in err


class Payload:
    """Unpickling this runs `open(marker, "w")`: a stand-in for arbitrary code in a malicious pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [torch.serialization.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
def test_pickled_objects_are_refused_not_executed(model, clip_dir, tmp_path, capsys, protocol):
    marker = tmp_path / "executed"
    state = to_released_state_dict(model)
    torch.save({"state_dict": state, "hook": Payload(marker)}, tmp_path / "evil.bin", pickle_protocol=protocol)
    err = run_cli_error(capsys, tmp_path / "evil.bin", "--clip", clip_dir, "--out", tmp_path / "out")
    assert "weights_only" in err
    if protocol == torch.serialization.DEFAULT_PROTOCOL:  # torch names the refused callable; protocol 5 fails earlier, on FRAME
        assert "pickled Python objects besides tensors (io.open)" in err
    assert not marker.exists()


def test_depth_flag_disagreeing_is_a_cli_error(model, clip_dir, tmp_path, capsys):
    torch.save(to_released_state_dict(model), tmp_path / "ckpt.bin")
    err = run_cli_error(capsys, tmp_path / "ckpt.bin", "--clip", clip_dir, "--out", tmp_path / "o", "--depth", "4")
    assert "holds 2 STAN layers" in err


def test_out_may_not_overwrite_the_clip_directory(model, clip_dir, tmp_path, capsys):
    torch.save(to_released_state_dict(model), tmp_path / "ckpt.bin")
    err = run_cli_error(capsys, tmp_path / "ckpt.bin", "--clip", clip_dir, "--out", clip_dir)
    assert "--clip directory itself" in err


def test_the_convert_package_imports_one_converter_at_a_time():
    """`from stanchat.convert import convert_official` loads the released converter only."""
    import subprocess
    import sys

    code = ("import sys; from stanchat.convert import convert_official; "
            "print(sorted(m for m in sys.modules if m.startswith('stanchat.convert.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['stanchat.convert.released']"


def test_stanchat_home_is_defined_once(tmp_path, monkeypatch):
    from stanchat.eval.config import default_cache_dir
    from stanchat.pretrained import stanchat_home

    from stanchat.engine.vllm_export import vllm_dir

    monkeypatch.setenv("STANCHAT_HOME", str(tmp_path))
    assert stanchat_home() == tmp_path and default_cache_dir() == tmp_path / "eval-features"
    assert vllm_dir(Path("llava")).parent == tmp_path / "vllm"
    package = Path(__file__).resolve().parents[2] / "stanchat"
    defining = ('"STANCHAT_HOME"', "~/.cache/stanchat\"", "Path.home()", '"STANCHAT_CACHE"')  # in code, not docs
    homes = sorted(str(path.relative_to(package)) for path in package.rglob("*.py")
                   if any(text in path.read_text() for text in defining))
    assert homes == ["pretrained.py"]  # every other module asks stanchat_home()
