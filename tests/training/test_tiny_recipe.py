"""The tiny recipe end to end at a very small size, and the pieces of its stage 3 (training.llava)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.floats import FLOAT32_APPROX
from training.recipes.tiny import TinyRecipe, main, override
from training.synthworld import WorldConfig, sample_specs

# every stage at toy size: 16 px frames, 2 steps each, a handful of clips
SMALL = ["size=16", "patch=8", "width=32", "layers=4", "text_layers=1", "projection=32", "holdout=4",
         "clip_stills=32", "clip_steps=2", "clip_batch=8", "videos=8", "video_frames=8", "frames=4", "stan_steps=2",
         "stan_batch=4", "test_clips=4", "llava.stills=8", "llava.steps=2", "llava.width=32", "llava.batch_size=4"]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe")
    assert main(["--out", str(out), "--set", *SMALL]) == 0
    return out


def test_recipe_writes_a_loadable_preset_with_card_and_examples(recipe_run):
    preset = recipe_run / "preset"
    for name in ("llava/config.json", "llava/model.safetensors", "llava/tokenizer.json", "llava/chat_template.jinja",
                 "stan/config.json", "stan/model.safetensors", "stan/tokenizer.json", "README.md"):
        assert (preset / name).is_file(), name
    summary = json.loads((recipe_run / "summary.json").read_text())
    assert set(summary["times"]) == {"data", "stage1_clip", "stage2_stan", "stage3_llava", "total"}
    probe = (recipe_run / "data" / "heldout" / "probe.jsonl").read_text().splitlines()
    assert len(probe) == 4 and all("reversed_caption" in line for line in probe)
    misaligned = (recipe_run / "data" / "heldout-misaligned" / "probe.jsonl").read_text().splitlines()
    assert len(misaligned) == 4 and misaligned != probe
    assert set(summary["videoqa"]) == {"stan", "mean"}
    assert {"accuracy", "direction", "size", "questions", "describe_exact", "describe_shape",
            "describe_motion"} <= set(summary["videoqa"]["stan"])
    manifest = json.loads((recipe_run / "examples" / "examples.json").read_text())
    assert [m["truth"] for m in manifest] == [e["caption"] for e in summary["examples"]]
    assert "training.recipes.tiny" in (preset / "README.md").read_text()


def test_trail_probe_scores_frame_mean_at_exactly_half(recipe_run):
    from training.recipes.tiny_results import trail_closeness

    result = trail_closeness(recipe_run, frames=4)
    assert result["clips"] > 0 and result["mean"] == 50.0 and 0.0 <= result["stan"] <= 100.0


def test_still_probe_reads_the_stage1_clip(recipe_run):
    from training.recipes.tiny_results import still_direction

    result = still_direction(recipe_run, count=6)
    assert set(result) == {"stills", "heldout", "trained"}
    assert all(0.0 <= result[k] <= 100.0 for k in ("heldout", "trained"))


def test_description_is_compared_word_by_word():
    from training.recipes.tiny_results import compare_description

    assert compare_description("a red circle moves right", "a red circle moves left") == {
        "exact": False, "colour": True, "shape": True, "motion": False}
    assert all(compare_description(" A red circle grows", "a red circle grows").values())
    assert not any(compare_description("up", "a red circle grows").values())


def test_stages_share_one_frozen_clip_tower(recipe_run):
    """Stage 2 froze the stage-1 CLIP and stage 3 put the same weights in LLaVA's tower; the graft
    then runs STAN beside exactly the tower it was trained on, ending at LLaVA's feature layer."""
    from transformers import CLIPModel, LlavaForConditionalGeneration

    from stanchat.stan import end_layer_for_feature_layer
    from stanchat.videoclip import VideoCLIP

    clip = CLIPModel.from_pretrained(recipe_run / "stage1" / "clip").vision_model.state_dict()
    tower = LlavaForConditionalGeneration.from_pretrained(recipe_run / "preset" / "llava").model.vision_tower
    videoclip = VideoCLIP.from_pretrained(recipe_run / "preset" / "stan")
    for key, value in clip.items():
        assert torch.equal(tower.state_dict()[key], value), key
        assert torch.equal(videoclip.clip.vision_model.state_dict()[key], value), key
    assert videoclip.end == end_layer_for_feature_layer(-2, len(tower.encoder.layers))


def test_cli_answers_with_the_trained_preset(recipe_run, capsys):
    from stanchat.cli import main as cli

    video = recipe_run / "examples" / json.loads((recipe_run / "examples" / "examples.json").read_text())[0]["video"]
    preset = recipe_run / "preset"
    assert cli(["ask", str(video), "What happens in this video?", "--llava", str(preset / "llava"),
                "--stan", str(preset / "stan"), "--frames", "4", "--max-new-tokens", "4", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["video_tokens"] == 4 and answer["temporal"] == "stan"


def test_overrides_are_typed_and_unknown_keys_fail():
    recipe = override(TinyRecipe(), ["clip_steps=7", "stan_lr=0.5", "llava.width=48", "scoring=mean"])
    assert (recipe.clip_steps, recipe.stan_lr, recipe.llava.width, recipe.scoring) == (7, 0.5, 48, "mean")
    from stanchat.errors import StanchatError

    with pytest.raises(StanchatError, match="valid keys"):
        override(TinyRecipe(), ["nope=1"])


def test_conversations_tokenize_without_unknown_words():
    from training.llava import build_processor, chat_tokenizer, encode_turn, make_examples, vocabulary, LlavaTrainConfig

    world = WorldConfig(motions=("left", "right", "up", "down", "grow", "shrink"))
    processor = build_processor(chat_tokenizer(vocabulary(world)), 64, 8)
    specs = sample_specs(20, seed=0, config=world)
    examples = make_examples(specs, processor, image_tokens=3, config=LlavaTrainConfig())
    unk = processor.tokenizer.unk_token_id
    assert all(unk not in ids for _, ids, _ in examples)
    ids, labels = encode_turn(processor, "Which way does the red circle move?", "left", image_tokens=3)
    answer = [t for t in labels if t != -100]
    assert processor.tokenizer.decode(answer, skip_special_tokens=True) == "left"
    assert answer[-1] == processor.tokenizer.eos_token_id
    assert ids.count(processor.tokenizer.convert_tokens_to_ids("<image>")) == 3


def test_feature_noise_changes_stage3_and_stays_a_function_of_the_seed(recipe_run, tmp_path):
    from safetensors.torch import load_file

    from training.llava import LlavaTrainConfig, train_llava

    world = WorldConfig(size=16, motions=("left", "right", "grow"))
    specs = sample_specs(6, seed=0, config=world)

    def weights(name: str, noise: float) -> dict:
        config = LlavaTrainConfig(stills=6, steps=2, width=32, batch_size=4, feature_noise=noise)
        out = train_llava(recipe_run / "stage1" / "clip", tmp_path / name, specs, world, config)
        return load_file(out / "model.safetensors")

    plain, noisy, again = weights("plain", 0.0), weights("noisy", 0.5), weights("again", 0.5)
    projector = [k for k in plain if "multi_modal_projector" in k]
    assert projector and all(torch.equal(noisy[k], again[k]) for k in noisy)
    assert any(not torch.equal(plain[k], noisy[k]) for k in projector)


def test_stage2_passes_its_loss_options_to_training(recipe_run, tmp_path):
    import yaml

    (tmp_path / "data").symlink_to(recipe_run / "data")
    args = ["--out", str(tmp_path), "--clip", str(recipe_run / "stage1" / "clip"), "--stop-after", "stage2"]
    assert main([*args, "--set", *SMALL, "reversed_negatives=true", "motion_still_weight=2.0"]) == 0
    config = yaml.safe_load((tmp_path / "stage2" / "run" / "config.yaml").read_text())
    assert config["model"]["reversed_negatives"] is True and config["model"]["motion_still_weight"] == 2.0
    stills = [json.loads(line).get("still") for line in (recipe_run / "data" / "videos" / "train.jsonl").open()]
    assert any(s and s.startswith("focus/") for s in stills)  # the focused share's stills keep their folder


def test_shape_probe_scores_stills_and_frames(recipe_run):
    from training.recipes.tiny_results import still_shapes

    result = still_shapes(recipe_run, count=6)
    assert set(result) == {"count", "heldout_still", "heldout_frame", "trained_still", "trained_frame"}
    assert all(0.0 <= v <= 100.0 for k, v in result.items() if k != "count")


def test_describe_probe_asks_the_image_path_the_graft_and_frame_mean(recipe_run):
    from training.recipes.tiny_results import describe_paths

    result = describe_paths(recipe_run, recipe_run / "preset", count=2, frames=4)
    assert set(result) == {"count"} | {f"{s}_{p}" for s in ("heldout", "trained") for p in ("still", "stan", "mean")}
    assert set(result["heldout_stan"]) == {"exact", "colour", "shape", "motion"}


def test_contrast_scores_frame_mean_blind_to_time_and_ranks_both_ways(recipe_run):
    from training.recipes.tiny_results import contrast

    probe = recipe_run / "data" / "heldout" / "probe.jsonl"
    blind = contrast(recipe_run / "preset" / "stan", probe, "mean", frame_mean=True, frames=4)
    assert blind["direction_acc"] == 50.0 and blind["reversal_flip"] == 0.0
    assert blind["reversal_cosine"] == pytest.approx(1.0, **FLOAT32_APPROX)  # frame means in two orders
    stan = contrast(recipe_run / "preset" / "stan", probe, "mug", frame_mean=False, frames=4)
    assert stan["clips"] == 4 and 1 <= stan["distinct_captions"] <= 4
    assert all(0.0 <= stan[k] <= 100.0 for k in ("r1_t2v", "r1_v2t", "direction_acc"))


def test_paired_comparison_of_a_model_with_itself_splits_nothing(recipe_run, capsys):
    from training.recipes.tiny_results import main as results

    stan, probe = recipe_run / "preset" / "stan", recipe_run / "data" / "heldout" / "probe.jsonl"
    assert results(["paired", "--first", f"{stan}:mug", "--second", f"{stan}:mug", "--probe", str(probe),
                    "--frames", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["only_first"], out["only_second"], out["p_value"]) == (0, 0, 1.0)
    assert out["r1_v2t_first"] == out["r1_v2t_second"] and out["both"] == round(out["clips"] * out["r1_v2t_first"] / 100)
    with pytest.raises(SystemExit):  # a scoring that does not exist is a usage error
        results(["paired", "--first", f"{stan}:best", "--second", f"{stan}:mug", "--probe", str(probe)])


def test_sign_test_p_values():
    from training.recipes.tiny_results import sign_test_p

    assert sign_test_p(0, 10) == pytest.approx(2 / 1024)  # all 10 discordant clips one way
    assert sign_test_p(35, 8) == sign_test_p(8, 35) == pytest.approx(4.1934e-5, rel=1e-4)  # RESULTS section 2
    assert sign_test_p(5, 5) == 1.0 and sign_test_p(0, 0) == 1.0
