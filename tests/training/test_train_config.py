"""Training config: YAML + base chain + overrides, types, one-line errors, the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from stanchat.errors import StanchatError
from training.config import TrainConfig, dump_config, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def test_defaults_and_overrides_convert_types():
    config = load_config(None, ["optim.clip_lr=4e-6", "optim.betas=[0.9, 0.99]", "model.stan.end_layer=-2",
                                "model.freeze_clip=true", "data.frames=8", "task=recognition"])
    assert config.optim.clip_lr == 4e-6 and isinstance(config.optim.clip_lr, float)  # YAML alone reads "4e-6" as text
    assert config.optim.betas == (0.9, 0.99)
    assert config.model.stan.end_layer == -2 and config.model.freeze_clip is True
    assert config.data.frames == 8 and config.task == "recognition"
    assert config.optim.stan_lr == TrainConfig().optim.stan_lr  # untouched values keep their default


def test_base_chain_merges_sections_key_by_key(tmp_path):
    (tmp_path / "a.yaml").write_text("task: pretrain\noptim: {clip_lr: 1.0e-6, stan_lr: 1.0e-5}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\noptim: {stan_lr: 3.0e-5}\n")
    config = load_config(str(tmp_path / "b.yaml"), ["optim.grad_clip=0"])
    assert (config.task, config.optim.clip_lr, config.optim.stan_lr, config.optim.grad_clip) == ("pretrain", 1e-6, 3e-5, 0.0)


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key optim.lrr; valid keys in section 'optim': clip_lr, stan_lr"),
    ("modell.x=1", "unknown config key modell; valid keys in the top level: task, model"),
    ("model.stan.width=3", "unknown config key model.stan.width; valid keys in section 'model.stan': depth"),
    ("optim.clip_lr=fast", "config key optim.clip_lr expects float, got 'fast'"),
    ("data.frames=2.5", "config key data.frames expects int"),
    ("task=segmentation", "task='segmentation' is not one of pretrain, retrieval, recognition"),
    ("model.scoring=max", "model.scoring='max' is not one of mean, mug, mug-simple"),
    ("model.stan.depth=0", "STANConfig.depth must be >= 1"),
    ("data.batch_size=0", "data.batch_size must be >= 1"),
    ("optim.stan_lr", "is not of the form section.key=value"),
])
def test_bad_values_fail_in_one_line(override, message):
    with pytest.raises(StanchatError) as err:
        load_config(None, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(StanchatError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    (tmp_path / "bad.yaml").write_text("task: [unclosed\n")
    with pytest.raises(StanchatError, match="not valid YAML"):
        load_config(str(tmp_path / "bad.yaml"))


def test_dump_round_trips(tmp_path):
    config = load_config(str(CONFIGS / "graft_l14_336.yaml"), ["optim.betas=[0.8, 0.9]"])
    (tmp_path / "c.yaml").write_text(dump_config(config))
    assert load_config(str(tmp_path / "c.yaml")) == config


# file -> (task, clip, clip lr, stan lr)
PAPER = {
    "pretrain_b32.yaml": ("pretrain", "openai/clip-vit-base-patch32", 4e-6, 4e-5),
    "pretrain_b16.yaml": ("pretrain", "openai/clip-vit-base-patch16", 4e-6, 4e-5),
    "pretrain_l14.yaml": ("pretrain", "openai/clip-vit-large-patch14", 4e-6, 4e-5),
    "retrieval_msrvtt.yaml": ("retrieval", "openai/clip-vit-base-patch32", 2e-6, 2e-5),
    "retrieval_didemo.yaml": ("retrieval", "openai/clip-vit-base-patch32", 2e-6, 2e-5),
    "retrieval_lsmdc.yaml": ("retrieval", "openai/clip-vit-base-patch32", 2e-6, 2e-5),
    "recognition_k400.yaml": ("recognition", "openai/clip-vit-base-patch32", 8e-6, 8e-5),
    "recognition_ucf101.yaml": ("recognition", "openai/clip-vit-base-patch32", 8e-6, 8e-5),
    "recognition_hmdb51.yaml": ("recognition", "openai/clip-vit-base-patch32", 8e-6, 8e-5),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs(name):
    config = load_config(str(CONFIGS / name))
    task, clip, clip_lr, stan_lr = PAPER[name]
    assert (config.task, config.model.clip, config.optim.clip_lr, config.optim.stan_lr) == (task, clip, clip_lr, stan_lr)
    assert config.data.frames == 12 and config.data.max_tokens in (32, 64)
    assert config.model.stan.end_layer == -1 and not config.model.freeze_clip


def test_graft_config_ends_at_llava_feature_layer_with_clip_frozen():
    from stanchat.stan import end_layer_for_feature_layer

    config = load_config(str(CONFIGS / "graft_l14_336.yaml"))
    assert config.model.clip == "openai/clip-vit-large-patch14-336" and config.model.freeze_clip
    # LLaVA-1.5 reads hidden_states[-2] of the 24-layer tower: encoder layer 22
    assert config.model.stan.resolve_end(24) == end_layer_for_feature_layer(-2, 24) == 22


def test_every_shipped_config_loads():
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert set(PAPER) | {"graft_l14_336.yaml", "tiny.yaml"} == set(names)
    for name in names:
        load_config(str(CONFIGS / name))
