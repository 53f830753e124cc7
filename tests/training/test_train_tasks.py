"""The task losses and validation metrics against direct computations on a tiny model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stanchat.stan import STANConfig
from stanchat.videoclip import VideoCLIP
from tests.floats import FLOAT32, FLOAT32_APPROX
from tests.tiny import randomise, tiny_clip
from training.losses import motion_still_gap, still_gap
from training.tasks import ContrastiveTask, RecognitionTask, VideoTextForward, retrieval_recall


@pytest.fixture(scope="module")
def model() -> VideoCLIP:
    model = VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2, drop_path_rate=0.0))
    randomise(model.stan, seed=1)  # a non-identity branch
    return model.eval()


def batch(b: int = 3, n: int = 6) -> dict:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 90, (b, n), generator=gen)
    ids[:, -1] = 98  # tests/tiny.py's CLIP (eos_token_id 2, HF's legacy rule) pools at the highest id
    return {"pixel_values": torch.randn(b, 4, 3, 16, 16, generator=gen), "input_ids": ids,
            "attention_mask": torch.ones(b, n, dtype=torch.long)}


def test_contrastive_loss_is_symmetric_infonce_of_mean_cosines(model):
    data = batch()
    loss = ContrastiveTask(model, "mean").loss(VideoTextForward(model), data)
    video = F.normalize(model.encode_video(data["pixel_values"]).mean(1), dim=-1)  # (B, P)
    text = F.normalize(model.encode_text(data["input_ids"])[1], dim=-1)
    logits = 100.0 * text @ video.T
    labels = torch.arange(3)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    mug = ContrastiveTask(model, "mug").loss(VideoTextForward(model), data)
    assert torch.isfinite(mug) and mug.item() != pytest.approx(loss.item())


def test_recognition_loss_is_cross_entropy_over_class_embeddings(model):
    data = batch(b=2)
    class_text = {"input_ids": batch(b=4)["input_ids"], "attention_mask": torch.ones(4, 6, dtype=torch.long)}
    task = RecognitionTask(model, "mean", class_text)
    task.embed_classes()
    labels = torch.tensor([3, 1])
    loss = task.loss(VideoTextForward(model), {**data, "labels": labels})
    video = F.normalize(model.encode_video(data["pixel_values"]).mean(1), dim=-1)
    classes = F.normalize(model.encode_text(class_text["input_ids"])[1], dim=-1)
    assert loss.item() == pytest.approx(F.cross_entropy(100.0 * video @ classes.T, labels).item(), rel=1e-5)


def test_retrieval_recall_counts_each_clip_once():
    keys = ["a", "a", "b", "c"]  # two captions of clip a
    scores = torch.tensor([
        [0.9, 0.9, 0.1, 0.2],  # caption of a: a first -> rank 1
        [0.1, 0.1, 0.8, 0.3],  # caption of a: b first, a third -> rank 3
        [0.2, 0.2, 0.1, 0.7],  # caption of b: c first, then a, then b -> rank 3
        [0.3, 0.3, 0.2, 0.6],  # caption of c: rank 1
    ])
    metrics = retrieval_recall(scores, keys)
    assert metrics["r1_t2v"] == pytest.approx(50.0) and metrics["r5_t2v"] == pytest.approx(100.0)
    # video -> text: a's best caption is row 0 (0.9, rank 1); b's is row 2 (0.1, below rows 1, 0, 3: rank 4);
    # c's is row 3 (0.6) below row 2 (0.7): rank 2
    assert metrics["r1_v2t"] == pytest.approx(100 / 3)
    assert (metrics["mdr_t2v"], metrics["mdr_v2t"]) == (2.0, 2.0)


def graft_ready_model() -> VideoCLIP:
    """A STAN ending at LLaVA's feature layer (-2), as the graft reads it."""
    model = VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2, end_layer=-2, drop_path_rate=0.0))
    randomise(model.stan, seed=1)
    return model.eval()


def test_still_weight_adds_the_graft_still_gap_to_the_contrastive_loss():
    graft_ready = graft_ready_model()
    forward, data = VideoTextForward(graft_ready), batch()
    with torch.no_grad():
        plain = ContrastiveTask(graft_ready, "mug").loss(forward, data)
        weighted = ContrastiveTask(graft_ready, "mug", still_weight=0.5).loss(forward, data)
        gap = still_gap(graft_ready, data["pixel_values"])
    assert gap > 0
    torch.testing.assert_close(weighted, plain + 0.5 * gap, **FLOAT32)


def test_reversed_negatives_add_each_clip_played_backwards_for_the_captions_to_rank(model):
    data = batch()
    with torch.no_grad():
        loss = ContrastiveTask(model, "mean", reversed_negatives=True).loss(VideoTextForward(model), data)
        clips = torch.cat([data["pixel_values"], data["pixel_values"].flip(1)])  # (2B, T, 3, H, W)
        video = F.normalize(model.encode_video(clips).mean(1), dim=-1)  # (2B, P)
        text = F.normalize(model.encode_text(data["input_ids"])[1], dim=-1)
    logits = 100.0 * text @ video.T  # (B, 2B)
    labels = torch.arange(3)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, :3].T, labels)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_video_tokens_of_the_training_pass_are_what_the_graft_hands_the_projector():
    from stanchat.graft import Graft
    from tests.tiny_llava import tiny_llava

    model, pixels = graft_ready_model(), batch()["pixel_values"]
    llava = tiny_llava(strategy="full")  # keeps the CLS, like the tokens here
    llava.model.vision_tower.load_state_dict(model.clip.vision_model.state_dict())
    with torch.no_grad():
        frames, tokens = model.encode_video_and_tokens(pixels)
        torch.testing.assert_close(frames, model.encode_video(pixels), **FLOAT32)
        torch.testing.assert_close(tokens, Graft(llava, model.stan).vision_tokens(pixels, "stan"), **FLOAT32)


def test_motion_still_weight_pulls_only_clips_with_a_still_towards_the_tower_tokens_of_it():
    model, data = graft_ready_model(), batch()
    stills = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    has = torch.tensor([True, False, True])
    forward = VideoTextForward(model)
    with torch.no_grad():
        plain = ContrastiveTask(model, "mug").loss(forward, data)
        weighted = ContrastiveTask(model, "mug", motion_still_weight=0.5).loss(
            forward, {**data, "stills": stills, "has_still": has})
        ignored = ContrastiveTask(model, "mug").loss(forward, {**data, "stills": stills, "has_still": has})
        tokens = model.encode_video_and_tokens(data["pixel_values"])[1][has]  # (2, 1+L, D)
        # the tower's own tokens of each still at LLaVA's feature layer, by HF's forward
        target = model.clip.vision_model(stills[has], output_hidden_states=True).hidden_states[model.end + 1]
    gap = (tokens - target).square().mean() / target.square().mean()
    assert gap > 0
    torch.testing.assert_close(weighted, plain + 0.5 * gap, **FLOAT32)
    torch.testing.assert_close(ignored, plain, **FLOAT32)  # weight 0: stills in the batch change nothing


def test_motion_still_gap_is_zero_for_tokens_equal_to_the_stills_own():
    model = graft_ready_model()
    stills = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        own = model.clip.vision_model(stills, output_hidden_states=True).hidden_states[model.end + 1]
        assert motion_still_gap(model, own, stills).item() == pytest.approx(0.0, **FLOAT32_APPROX)
