"""`stanchat convert llava`: an original-layout LLaVA v1, written here by the test, into transformers' LLaVA.

The original's forward is computed directly from its own weights (a Llama, the CLIP tower's layer
-2 without CLS, one linear projector, the projected patches in place of the <im_patch> embeddings
between <im_start> and <im_end>) and compared with the converted model's logits.
"""

from __future__ import annotations

import io
import json
import re

import pytest
import torch
from transformers import (AutoProcessor, CLIPImageProcessor, LlamaConfig, LlamaForCausalLM,
                          LlavaForConditionalGeneration, PreTrainedTokenizerFast)

from stanchat.cli import main
from stanchat.convert import convert_llava_v1
from stanchat.errors import WeightsError
from stanchat.pretrained import LLAVA_V1_SYSTEM
from tests.floats import FLOAT32_DEEP
from tests.tiny import randomise, tiny_clip
from tests.tiny_llava import byte_tokenizer, error_line, save_tiny_stan, write_video

IMAGE, PATCH = 16, 8  # 4 patches per frame
V1_TOKENS = ["<im_patch>", "<im_start>", "<im_end>"]


def v1_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer with LLaVA v1's three added tokens (and no <image> token)."""
    tokenizer = byte_tokenizer()
    tokenizer.add_tokens(V1_TOKENS, special_tokens=True)
    return tokenizer


def write_tower(directory):
    """openai/clip-vit-large-patch14's files in miniature: CLIPModel weights + image processor."""
    clip = tiny_clip(seed=3, image_size=IMAGE, patch_size=PATCH)
    randomise(clip, seed=4, std=0.05)
    clip.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}).save_pretrained(directory)
    return clip


def write_original(directory, tower_dir, start_end=True, extra=None, drop=None, vocab_size=None):
    """A LLaVA v1 checkpoint in the original layout: LlavaLlamaForCausalLM config, two pytorch shards
    (`vocab_size` rows of embedding, default the byte-level tokenizer's)."""
    tokenizer = v1_tokenizer()
    text = LlamaConfig(vocab_size=vocab_size or len(tokenizer), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                       bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(5)
    llama = randomise(LlamaForCausalLM(text).eval(), seed=6, std=0.3)
    state = dict(llama.state_dict())
    state["model.mm_projector.weight"] = torch.randn(64, 32) * 0.3
    state["model.mm_projector.bias"] = torch.randn(64) * 0.3
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # old checkpoints saved this buffer
    state.update(extra or {})
    for key in drop or ():
        state.pop(key)
    names = sorted(state)
    half = len(names) // 2
    directory.mkdir(parents=True)
    for i, part in enumerate((names[:half], names[half:])):
        torch.save({k: state[k] for k in part}, directory / f"pytorch_model-0000{i + 1}-of-00002.bin")
    config = {**text.to_dict(), "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava",
              "mm_vision_tower": str(tower_dir), "mm_vision_select_layer": -2, "mm_hidden_size": 32,
              "mm_use_im_start_end": start_end, "use_mm_proj": True, "tune_mm_mlp_adapter": False}
    (directory / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(directory)
    return llama, state, tokenizer


def original_ids(prompt: str, encode, token_id, bos: int) -> list[int]:
    """The ids LLaVA v1's training tokenizer gave `prompt`, by the rule of transformers ~4.28's slow
    `PreTrainedTokenizer.tokenize` (LLaVA and Video-ChatGPT train with `use_fast=False`): the text is
    split at the added tokens and </s>; LLaVA's three tokens were added as plain strings, so the
    whitespace on both sides of them is stripped (</s>, an AddedToken without strip, keeps it); each
    piece left is encoded alone by `encode` (for sentencepiece: with its "▁" dummy prefix); <s> first."""
    pieces = re.split("(<im_patch>|<im_start>|<im_end>|</s>)", prompt)  # text, token, text, ..., text
    ids = [bos]
    for i, piece in enumerate(pieces):
        if i % 2:
            ids.append(token_id(piece))
            continue
        if i > 0 and pieces[i - 1] in V1_TOKENS:
            piece = piece.lstrip()
        if i < len(pieces) - 1 and pieces[i + 1] in V1_TOKENS:
            piece = piece.rstrip()
        ids.extend(encode(piece) if piece else [])
    return ids


def original_logits(llama, state, clip, tokenizer, prompt, pixel_values):
    """The original LLaVA v1 forward, from its weights: tower layer -2 without CLS, one Linear, spliced,
    on the ids its tokenizer gave (`original_ids`)."""
    with torch.no_grad():
        hidden = clip.vision_model(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
        features = torch.nn.functional.linear(hidden, state["model.mm_projector.weight"], state["model.mm_projector.bias"])
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        ids = torch.tensor([original_ids(prompt, encode, tokenizer.convert_tokens_to_ids, tokenizer.bos_token_id)])
        embeds = llama.get_input_embeddings()(ids)
        start = int((ids[0] == tokenizer.convert_tokens_to_ids("<im_start>")).nonzero()[0])
        n = features.shape[1]
        assert ids[0, start + n + 1] == tokenizer.convert_tokens_to_ids("<im_end>")
        embeds = torch.cat([embeds[:, :start + 1], features, embeds[:, start + 1 + n:]], dim=1)
        return ids, llama(inputs_embeds=embeds).logits


@pytest.fixture
def original(tmp_path):
    tower_dir = tmp_path / "clip-vit-large-patch14"
    clip = write_tower(tower_dir)
    llama, state, tokenizer = write_original(tmp_path / "llava-v1", tower_dir)
    return {"dir": tmp_path / "llava-v1", "tower": tower_dir, "clip": clip, "llama": llama, "state": state,
            "tokenizer": tokenizer}


def test_converted_logits_equal_the_original_forward(original, tmp_path):
    assert main(["convert", "llava", str(original["dir"]), "--out", str(tmp_path / "out")]) == 0
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"
    assert processor.image_token == "<im_patch>" and model.config.image_token_id == processor.image_token_id
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What moves?"}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert prompt == f"{LLAVA_V1_SYSTEM} USER: What moves?\n<im_start><im_patch><im_end> ASSISTANT:"
    expanded = prompt.replace("<im_patch>", "<im_patch>" * 4)
    pixel_values = torch.randn(1, 3, IMAGE, IMAGE)
    ids, expected = original_logits(original["llama"], original["state"], original["clip"], original["tokenizer"],
                                    expanded, pixel_values)
    assert torch.equal(processor.tokenizer(expanded, return_tensors="pt")["input_ids"], ids)
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=pixel_values).logits
    # two code paths (transformers' LLaVA with the identity linear_2 and masked_scatter, the original
    # spelled out with F.linear and cat) need not run the same kernels in the same order: a tolerance
    torch.testing.assert_close(logits, expected, **FLOAT32_DEEP)
    projector = model.model.multi_modal_projector
    assert torch.equal(projector.linear_1.weight, original["state"]["model.mm_projector.weight"])
    assert torch.equal(projector.linear_2.weight, torch.eye(64))


def test_transformers_own_processor_and_generate_run_the_converted_v1(original, tmp_path):
    """transformers' processor(images=, text=) expands the one <im_patch> itself: to L tokens, the
    patches left after the CLS is dropped (strategy default). Its input gives the original's logits,
    and generate runs on it."""
    import numpy as np

    convert_llava_v1(original["dir"], tmp_path / "out")
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What moves?"}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)  # not square: resize + crop
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    patches = (IMAGE // PATCH) ** 2
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == patches
    ids, expected = original_logits(original["llama"], original["state"], original["clip"], original["tokenizer"],
                                    prompt.replace("<im_patch>", "<im_patch>" * patches), inputs["pixel_values"])
    assert torch.equal(inputs["input_ids"], ids)
    with torch.no_grad():
        logits = model(**inputs).logits
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    torch.testing.assert_close(logits, expected, **FLOAT32_DEEP)  # two code paths, as above: a tolerance
    assert out.shape[1] > ids.shape[1] and torch.equal(out[0, :ids.shape[1]], ids[0])
    assert int(out[0, ids.shape[1]]) == int(expected[0, -1].argmax())  # greedy: the original's next token


def test_history_follows_the_v1_separators(original, tmp_path):
    convert_llava_v1(original["dir"], tmp_path / "out")
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "A?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "B."}]},
                    {"role": "user", "content": [{"type": "text", "text": "C?"}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert prompt == f"{LLAVA_V1_SYSTEM} USER: A?\n<im_start><im_patch><im_end> ASSISTANT: B.</s>USER: C? ASSISTANT:"


def test_the_converted_v1_answers_with_256_style_tokens(original, tmp_path, capsys):
    """The v1 route end to end: a converted LLaVA v1 with a STAN answers, L = 4 patches (CLS dropped)."""
    convert_llava_v1(original["dir"], tmp_path / "out")
    video = write_video(tmp_path / "clip.mp4")
    assert main(["ask", str(video), "What?", "--llava", str(tmp_path / "out"), "--stan",
                 str(save_tiny_stan(tmp_path / "stan")), "--json", "--max-new-tokens", "3", "--frames", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["video_tokens"] == 4


@pytest.mark.parametrize("change, message", [
    (dict(extra={"model.extra_head.weight": torch.zeros(2)}), "unknown keys: model.extra_head.weight"),
    (dict(drop=["model.mm_projector.bias"]), "missing keys: model.multi_modal_projector.linear_1.bias"),
    (dict(extra={"model.mm_projector.weight": torch.zeros(64, 16)}), "shape mismatches"),
])
def test_keys_and_shapes_are_checked(tmp_path, capsys, change, message):
    tower_dir = tmp_path / "tower"
    write_tower(tower_dir)
    write_original(tmp_path / "src", tower_dir, **change)
    assert main(["convert", "llava", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 2
    assert message in error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_the_original_layout_is_refused_by_ask_with_the_convert_command(original, tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4")
    assert main(["ask", str(video), "What?", "--llava", str(original["dir"]),
                 "--stan", str(save_tiny_stan(tmp_path / "stan"))]) == 2
    assert f"stanchat convert llava {original['dir']} --out" in error_line(capsys.readouterr().err)


def test_a_transformers_llava_is_not_an_original_v1(tmp_path):
    from tests.tiny_llava import save_tiny_llava

    with pytest.raises(WeightsError, match="not an original-layout LLaVA v1"):
        convert_llava_v1(save_tiny_llava(tmp_path / "hf"), tmp_path / "out")


def test_a_sentencepiece_tokenizer_model_converts_and_keeps_the_bos(original, tmp_path):
    """LLaVA v1 repos ship `tokenizer.model` (sentencepiece) + added_tokens.json; the original's slow
    LlamaTokenizer prepended <s>, so the converted tokenizer must too."""
    import io

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["a woman does yoga on a roof", "what happens in the video"] * 40), model_writer=model,
        vocab_size=40, model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    source = original["dir"]
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (source / name).unlink(missing_ok=True)
    (source / "tokenizer.model").write_bytes(model.getvalue())
    (source / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    (source / "added_tokens.json").write_text(json.dumps({"<im_patch>": 40, "<im_start>": 41, "<im_end>": 42}))
    convert_llava_v1(source, tmp_path / "out")
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    ids = processor.tokenizer("USER: hi\n<im_start><im_patch><im_end> ASSISTANT:")["input_ids"]
    assert ids[0] == 1 and [40, 41, 42] == sorted(set(ids) & {40, 41, 42})
    model_config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert processor.image_token_id == model_config["image_token_index"] == 40


def llama_sentencepiece() -> bytes:
    """A small sentencepiece model set up as Llama's: BPE, byte fallback (so "\\n" is <0x0A>), a "▁"
    dummy prefix, spaces kept, no normalisation; <unk> <s> </s> are ids 0 1 2."""
    import sentencepiece

    text = [LLAVA_V1_SYSTEM, "USER: What moves? ASSISTANT: The cat.", "a woman does yoga on a roof"]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text * 40), model_writer=model, vocab_size=400, model_type="bpe", byte_fallback=True,
        add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    return model.getvalue()


def test_the_v1_prompt_gets_the_ids_the_original_was_trained_on(original, tmp_path):
    """LLaVA v1 trained on the ids of transformers ~4.28's slow LlamaTokenizer (`original_ids`): no
    <0x0A> before <im_start>, "▁ASSISTANT" after <im_end>, "▁USER" after </s>. The converted
    tokenizer, read back from disk, gives the same ids for a two-turn prompt."""
    import sentencepiece

    spm = llama_sentencepiece()
    write_original(source := tmp_path / "sp", original["tower"], vocab_size=403)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (source / name).unlink(missing_ok=True)
    (source / "tokenizer.model").write_bytes(spm)
    (source / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    added = {"<im_patch>": 400, "<im_start>": 401, "<im_end>": 402}
    (source / "added_tokens.json").write_text(json.dumps(added))
    convert_llava_v1(source, tmp_path / "out")
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What moves?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "The cat."}]},
                    {"role": "user", "content": [{"type": "text", "text": "a roof?"}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    prompt = prompt.replace("<im_patch>", "<im_patch>" * 4)
    encode = sentencepiece.SentencePieceProcessor(model_proto=spm).encode  # each piece alone, "▁" first
    expected = original_ids(prompt, encode, lambda token: added.get(token, 2), bos=1)
    ids = processor.tokenizer(prompt)["input_ids"]
    assert ids == expected
    tokens = processor.tokenizer.convert_ids_to_tokens(ids)
    after = lambda token: tokens[tokens.index(token) + 1]  # noqa: E731
    assert tokens[tokens.index("<im_start>") - 1] == "?" and "<0x0A>" not in tokens
    assert after("<im_end>").startswith("▁A") and after("</s>").startswith("▁U")


def test_out_may_not_be_the_source(original, capsys):
    assert main(["convert", "llava", str(original["dir"]), "--out", str(original["dir"])]) == 2
    assert "source directory itself" in error_line(capsys.readouterr().err)
