"""open_clip's own tokenizer for models `stanchat convert open-clip` wrote: the ids open_clip gives,
called like a transformers tokenizer, saved and found again by `load_text_tokenizer`."""

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from stanchat.openclip_tokenizer import OpenCLIPTokenizer, open_clip_name  # noqa: E402
from stanchat.videomodel import has_text_tokenizer, load_text_tokenizer  # noqa: E402

TEXTS = ["a red circle moves left", "a blue square grows and then a green triangle moves up quickly"]


def test_ids_are_open_clips_and_the_mask_marks_real_tokens():
    ours = OpenCLIPTokenizer("ViT-B-32")(TEXTS, padding="max_length", truncation=True, max_length=8, return_tensors="pt")
    theirs = open_clip.get_tokenizer("ViT-B-32")(TEXTS, context_length=8)
    assert torch.equal(ours["input_ids"], theirs)
    assert torch.equal(ours["attention_mask"], (theirs != 0).long())
    assert ours["attention_mask"][1].all() and ours["input_ids"][1, -1] == 49407  # truncated, the end token kept
    assert ours["attention_mask"][0].sum() == 7  # start + 5 words + end, then padding


def test_saved_beside_a_model_and_found_from_an_open_clip_source(tmp_path):
    assert open_clip_name("open_clip:coca_ViT-L-14:laion2b_s13b_b90k") == "coca_ViT-L-14"
    assert open_clip_name("openai/clip-vit-base-patch32") is None
    found = load_text_tokenizer(tmp_path, source="open_clip:ViT-B-32:laion2b_s34b_b79k")
    assert isinstance(found, OpenCLIPTokenizer) and found.model_name == "ViT-B-32"
    found.save_pretrained(tmp_path / "checkpoint")
    assert has_text_tokenizer(tmp_path / "checkpoint")
    again = load_text_tokenizer(tmp_path / "checkpoint")
    assert isinstance(again, OpenCLIPTokenizer) and again.model_name == "ViT-B-32"
