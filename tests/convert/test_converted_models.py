"""Every model `stanchat convert` writes is usable by the common loader: evaluated by
`stanchat eval` and trained a step by `training.train.main`, each asking the model (not its
backbone's config) for its image size and text length.

Built tiny in the test: the released (official) layout of a VideoCLIP, and open_clip's CLIP and
CoCa (registered under test names, random weights), each converted by the CLI. `open-clip-coca-bpe`
has open_clip's real vocabulary and no tokenizer saved beside it: it is read with open_clip's own
tokenizer, as a real `stanchat convert open-clip` output is."""

from __future__ import annotations

import json

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from stanchat.architectures import load_video_model  # noqa: E402
from stanchat.cli import main  # noqa: E402
from stanchat.cocaclip import CoCaVideoCLIP  # noqa: E402
from stanchat.errors import WeightsError  # noqa: E402
from stanchat.videoclip import VideoCLIP  # noqa: E402
from stanchat.videomodel import has_text_tokenizer  # noqa: E402
from tests.evalkit import FRAMES, write_synthetic  # noqa: E402
from tests.tiny import TINY_COCA_CFG, TINY_OPEN_CLIP_CFG  # noqa: E402
from tests.training_world import tiny_args, tiny_backbone, world  # noqa: E402, F401  (fixtures)

# what each converted model must report: (class, image size, text length)
EXPECTED = {"official": (VideoCLIP, 16, 32), "open-clip": (VideoCLIP, 16, 16), "open-clip-coca": (CoCaVideoCLIP, 16, 15),
            "open-clip-coca-bpe": (CoCaVideoCLIP, 16, 15)}
BPE_VOCAB = 49408  # open_clip's SimpleTokenizer
BPE_COCA_CFG = {**TINY_COCA_CFG, "text_cfg": {**TINY_COCA_CFG["text_cfg"], "vocab_size": BPE_VOCAB},
                "multimodal_cfg": {**TINY_COCA_CFG["multimodal_cfg"], "vocab_size": BPE_VOCAB}}
REGISTERED = {"stanchat-tiny": TINY_OPEN_CLIP_CFG, "stanchat-tiny-coca": TINY_COCA_CFG,
              "stanchat-tiny-coca-bpe": BPE_COCA_CFG}


def convert_official(tmp_path, backbone) -> list[str]:
    """A released-layout checkpoint of a tiny VideoCLIP, and the CLI arguments that convert it."""
    from stanchat.convert import to_released_state_dict
    from stanchat.stan import STANConfig

    model = VideoCLIP.from_clip_pretrained(str(backbone), STANConfig(depth=2))
    torch.save(to_released_state_dict(model), tmp_path / "Mug-Stan-tiny.pth")
    return ["official", str(tmp_path / "Mug-Stan-tiny.pth"), "--clip", str(backbone)]


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_backbone) -> dict:
    """name -> directory written by `stanchat convert` (with a tokenizer saved beside the open_clip ones,
    as the loader's error asks; the official conversion copies the --clip one)."""
    from training.tiny_backbone import tiny_tokenizer

    root = tmp_path_factory.mktemp("converted")
    configs = open_clip.factory._MODEL_CONFIGS
    configs.update(REGISTERED)
    try:
        sources = {"official": convert_official(root, tiny_backbone),
                   "open-clip": ["open-clip", "stanchat-tiny", "--depth", "2"],
                   "open-clip-coca": ["open-clip", "stanchat-tiny-coca", "--depth", "2"],
                   "open-clip-coca-bpe": ["open-clip", "stanchat-tiny-coca-bpe", "--depth", "2"]}
        out = {}
        for name, args in sources.items():
            out[name] = root / name
            assert main(["convert", *args, "--out", str(out[name])]) == 0
            if not has_text_tokenizer(out[name]) and name != "open-clip-coca-bpe":
                tiny_tokenizer(EXPECTED[name][2]).save_pretrained(out[name])
        yield out  # open_clip's tokenizer is looked up by the registered name while the tests run
    finally:
        for name in REGISTERED:
            configs.pop(name)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_loader_reads_each_converted_model_and_the_model_answers_its_sizes(converted, name):
    cls, image_size, text_length = EXPECTED[name]
    model = load_video_model(converted[name])
    assert type(model) is cls and (model.image_size, model.text_length) == (image_size, text_length)
    if name == "open-clip-coca-bpe":  # nothing saved beside it: open_clip's own tokenizer, found by its source
        from stanchat.openclip_tokenizer import OpenCLIPTokenizer
        from stanchat.videomodel import load_text_tokenizer

        assert not has_text_tokenizer(converted[name])
        assert isinstance(load_text_tokenizer(converted[name], model.config.source), OpenCLIPTokenizer)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_converted_model_is_evaluated_with_default_options(converted, name, tmp_path):
    data = write_synthetic(tmp_path / "data", "jsonl", task="retrieval")
    out = tmp_path / "out"
    assert main(["eval", "retrieval", "--dataset", "jsonl", "--data-root", str(data.root), "--model",
                 str(converted[name]), "--frames", FRAMES, "--out", str(out), "--no-cache", "--workers", "0"]) == 0
    results = json.loads((out / "retrieval.json").read_text())
    assert results["settings"]["tokens"] == min(32, EXPECTED[name][2])  # the model's length where it has fewer
    assert results["metrics"]["text_to_video"]["queries"] == 3


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_converted_model_trains_a_step(converted, name, world, tiny_backbone, tmp_path):
    from safetensors.torch import load_file

    from training import checkpoint
    from training.train import main as train

    out = tmp_path / "run"
    length = EXPECTED[name][2]
    assert train(tiny_args(world, tiny_backbone, out, f"model.pretrained={converted[name]}", "schedule.steps=1",
                           f"data.max_tokens={min(16, length)}", "data.val_split=", "run.save_every=1")) == 0
    trained = load_video_model(checkpoint.checkpoint_dir(out, 1))  # the step's checkpoint: a loadable model
    assert type(trained) is EXPECTED[name][0]
    assert has_text_tokenizer(checkpoint.checkpoint_dir(out, 1))  # the checkpoint carries its tokenizer, whichever
    start = load_file(converted[name] / "model.safetensors")
    after = trained.state_dict()
    assert any(not torch.equal(after[k], start[k]) for k in start if k.startswith("stan."))  # the branch trained


def test_still_weights_on_a_coca_are_refused_in_one_line(converted, world, tiny_backbone, tmp_path, capsys):
    from training.train import main as train

    argv = tiny_args(world, tiny_backbone, tmp_path / "run", f"model.pretrained={converted['open-clip-coca']}",
                     "data.max_tokens=15", "model.still_weight=0.5", "data.val_split=")
    assert train(argv) == 2
    assert "only a VideoCLIP has" in capsys.readouterr().err


def test_the_llava_graft_refuses_a_coca_in_one_line(converted):
    from stanchat.graft import load_graft_model

    assert type(load_graft_model(converted["open-clip"])) is VideoCLIP
    with pytest.raises(WeightsError, match="holds a CoCaVideoCLIP; the LLaVA graft needs a VideoCLIP"):
        load_graft_model(converted["open-clip-coca"])
