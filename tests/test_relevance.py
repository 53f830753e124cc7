"""FrameRelevance: a question's Mug weight on each frame, from the VideoCLIP's text tower."""

import pytest
import torch

from stanchat.errors import StanchatError
from stanchat.mug import text_to_frame_weights
from stanchat.relevance import FrameRelevance
from stanchat.video import Preprocessor, load_video
from tests.floats import FLOAT32_APPROX
from tests.tiny_app import tiny_text_tokenizer
from tests.tiny_llava import tiny_videoclip, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return load_video(write_video(tmp_path_factory.mktemp("relevance") / "clip.mp4", frames=24), frames=6)


def test_weights_are_mug_over_the_videoclip_features(clip, tmp_path):
    model = tiny_videoclip()
    model.save_pretrained(tmp_path)
    tokenizer = tiny_text_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    relevance = FrameRelevance.from_directory(model, tmp_path)
    weights = relevance(clip, "where is it?")
    with torch.no_grad():  # the same computation, spelled out
        batch = tokenizer("where is it?", return_tensors="pt")
        tokens, _ = model.encode_text(batch["input_ids"], batch["attention_mask"])
        frames = model.encode_video(Preprocessor(size=16, crop_size=16)(clip))  # the tower's 16 px
        expected = text_to_frame_weights(tokens[0], batch["attention_mask"][0], frames[0], tau=100.0)
    assert weights == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-5) and sum(weights) == pytest.approx(1.0, **FLOAT32_APPROX)
    other = relevance(clip, "red dot")
    assert len(other) == 6 and other != weights  # the question matters


def test_words_the_tokenizer_does_not_know_are_not_read(clip):
    """Unknown-word tokens are dropped before the text tower: they would change every other
    token's features (selection found the asked event far less often with them read)."""
    model = tiny_videoclip()
    relevance = FrameRelevance(model, tiny_text_tokenizer())
    tokenizer = relevance.tokenizer
    assert tokenizer.unk_token_id in tokenizer("where ## is it?")["input_ids"]  # "#" is not in its vocabulary
    assert relevance(clip, "where ## is it?") == pytest.approx(relevance(clip, "where is it?"), rel=1e-6, abs=1e-7)
    assert len(relevance(clip, "###")) == 6  # nothing known: start and end alone still give weights


def test_long_questions_are_cut_to_the_text_tower_positions(clip, tmp_path):
    model = tiny_videoclip()
    relevance = FrameRelevance(model, tiny_text_tokenizer())
    assert model.clip.config.text_config.max_position_embeddings == 16
    assert len(relevance(clip, "what happens " * 20)) == 6


def test_no_tokenizer_means_no_relevance_and_empty_questions_are_refused(clip, tmp_path):
    model = tiny_videoclip()
    assert FrameRelevance.from_directory(model, tmp_path) is None
    with pytest.raises(StanchatError, match="question is empty"):
        FrameRelevance(model, tiny_text_tokenizer())(clip, "  ")
