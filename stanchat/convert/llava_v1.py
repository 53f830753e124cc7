"""An original-layout LLaVA v1 (e.g. `mmaaz60/LLaVA-7B-Lightening-v1-1`) -> transformers'
`LlavaForConditionalGeneration` with its processor and chat template, exactly.

The original (`LlavaLlamaForCausalLM`, LLaVA's own repo) is a Llama whose state dict adds
`model.mm_projector` (one Linear, tower width -> LLM width) and reads its CLIP tower from
`mm_vision_tower` (`openai/clip-vit-large-patch14`, 224 px) at `mm_vision_select_layer` (-2),
dropping the CLS. With `mm_use_im_start_end` its prompt is
`question\\n<im_start><im_patch> x 256<im_end>`, and the projected patches replace the `<im_patch>`
embeddings. Translation:

    model.embed_tokens / layers / norm   -> model.language_model.embed_tokens / layers / norm
    lm_head                              -> lm_head
    model.mm_projector.{weight,bias}     -> model.multi_modal_projector.linear_1.{weight,bias}
    (identity, zero bias, activation "linear") -> model.multi_modal_projector.linear_2 / act
    model.vision_tower.vision_tower.vision_model.* or the tower checkpoint's vision_model.* -> model.vision_tower.*

transformers' projector is `linear_2(act(linear_1(x)))`; with `projector_hidden_act="linear"`
(identity) and `linear_2` the identity matrix with zero bias it computes `W x + b` exactly: each
output is x_i * 1 plus exact zeros (0 * x_j), in any float format without TF32. `<im_patch>` becomes
the `image_token_index`; `<im_start>`/`<im_end>` stay in the chat template
(`stanchat.pretrained.LLAVA_V1_CHAT_TEMPLATE`), and the tokenizer gives the prompt the ids the
original was trained on (see `_tokenizer`). The processor expands the one `<im_patch>` to the tower's
patch count (256 at 224 px), as stanchat does. Every key is accounted for and every shape checked
before the model is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch

from stanchat.errors import WeightsError
from stanchat.hub import resolve_model_dir
from stanchat.pretrained import LLAVA_V1_CHAT_TEMPLATE

logger = logging.getLogger(__name__)

ORIGINAL_ARCHITECTURE = "LlavaLlamaForCausalLM"
IMAGE_PATCH, IM_START, IM_END = "<im_patch>", "<im_start>", "<im_end>"
# (original prefix, transformers prefix), first match wins
KEY_TABLE: tuple[tuple[str, str], ...] = (
    ("model.mm_projector.", "model.multi_modal_projector.linear_1."),
    ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower."),  # LLaVA's CLIPVisionTower wrapper
    ("model.vision_tower.vision_model.", "model.vision_tower."),  # early v1: the CLIPVisionModel itself
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
    ("lm_head.", "lm_head."),
)
TOWER_PREFIX = ("vision_model.", "model.vision_tower.")  # the CLIP checkpoint's names -> transformers 5 LLaVA
IGNORED = re.compile(r"(rotary_emb\.inv_freq|position_ids)$")  # buffers old checkpoints saved; rebuilt on load
PROCESSOR_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def _config(directory: Path, what: str) -> dict:
    try:
        return json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"{what} {directory} has no readable config.json ({type(err).__name__})") from err


def original_config(source: str | os.PathLike) -> dict:
    """The original LLaVA v1 config.json, checked to be one (`LlavaLlamaForCausalLM`, one tower layer)."""
    config = _config(Path(source), "LLaVA v1 directory")
    if ORIGINAL_ARCHITECTURE not in (config.get("architectures") or []):
        raise WeightsError(f"{source} is not an original-layout LLaVA v1 (architectures "
                           f"{config.get('architectures')}, expected {ORIGINAL_ARCHITECTURE})")
    for key in ("mm_vision_tower", "mm_vision_select_layer"):
        if key not in config:
            raise WeightsError(f"{source}/config.json has no {key}; expected an original LLaVA v1 config")
    if not isinstance(config["mm_vision_select_layer"], int):
        raise WeightsError(f"{source}: mm_vision_select_layer {config['mm_vision_select_layer']!r} is not one layer")
    return config


def original_tower(source: str | os.PathLike) -> str:
    """The CLIP tower an original LLaVA v1 reads (`mm_vision_tower`, a hub id or directory)."""
    return original_config(source)["mm_vision_tower"]


def _load_file(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(file)
    try:  # memory-mapped: a 7B checkpoint is not read twice into memory
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(file, map_location="cpu", weights_only=True)  # a pre-zipfile pickle cannot be mapped


def read_weights(directory: Path, what: str) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory: safetensors shards when present, else pytorch pickles
    (read with weights_only=True, memory-mapped where the format allows)."""
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))
    if not files:
        raise WeightsError(f"{what} {directory} holds no *.safetensors or pytorch_model*.bin weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            part = _load_file(file)
        except Exception as err:  # truncated, corrupt or not a checkpoint
            raise WeightsError(f"{file} is not a readable checkpoint ({type(err).__name__}); fetch it again") from err
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise WeightsError(f"{file} is not a state dict of tensors; expected LLaVA v1 / CLIP weights")
        state.update(part)
    return state


def _rename(source: dict[str, torch.Tensor], tower: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """transformers names for the original's tensors (tower weights from `tower` unless the original
    carries its own); returns (state, unknown original keys)."""
    out, unknown = {}, []
    for key, value in source.items():
        if IGNORED.search(key):
            continue
        new = next((theirs + key[len(ours):] for ours, theirs in KEY_TABLE if key.startswith(ours)), None)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if not any(k.startswith(TOWER_PREFIX[1]) for k in out):
        ours, theirs = TOWER_PREFIX
        out.update({theirs + k[len(ours):]: v for k, v in tower.items()
                    if k.startswith(ours) and not IGNORED.search(k)})
    return out, sorted(unknown)


def _check(state: dict[str, torch.Tensor], model: torch.nn.Module, unknown: list[str], origin: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unknown = unknown + sorted(set(state) - set(own))
    shapes = sorted(f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
                    for k, v in state.items() if k in own and v.shape != own[k].shape)
    problems = [f"{what}: {', '.join(keys[:6])}" + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
                for what, keys in (("unknown keys", unknown), ("missing keys", missing), ("shape mismatches", shapes))
                if keys]
    if problems:
        raise WeightsError(f"{origin} does not fit a LLaVA built from its config: " + "; ".join(problems))
    assert len(state) == len(own), (len(state), len(own))  # one tensor per parameter, no more, no less


def llava_config(original: dict, tower_config: dict, tokenizer):
    """transformers' LlavaConfig for an original LLaVA v1 config and its CLIP tower's config."""
    from transformers import CLIPConfig, CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = (CLIPConfig.from_dict(tower_config).vision_config if tower_config.get("model_type") == "clip"
              else CLIPVisionConfig.from_dict(tower_config))
    fields = LlamaConfig().to_dict()  # the Llama fields; LLaVA's own (mm_*, freeze_*, ...) are left behind
    text = LlamaConfig.from_dict({k: v for k, v in original.items() if k in fields and k != "model_type"})
    patch = tokenizer.convert_tokens_to_ids(IMAGE_PATCH)
    return LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=patch,
                       vision_feature_layer=original["mm_vision_select_layer"], vision_feature_select_strategy="default",
                       projector_hidden_act="linear", multimodal_projector_bias=True)


def _tokenizer(source: Path, use_start_end: bool):
    """The original's tokenizer, giving the ids LLaVA v1 was trained on (its training loaded the slow
    LlamaTokenizer of transformers ~4.28, `use_fast=False`):

    - <s> first: transformers 5 builds a Llama tokenizer from `tokenizer.model` without <s> unless the
      config says `add_bos_token`, so the original default is passed when the config is silent.
    - LLaVA added <im_patch>/<im_start>/<im_end> as plain strings, and the slow tokenizer strips the
      whitespace on both sides of such tokens: the original never saw the "\n" before <im_start> nor
      the space before "ASSISTANT:". Here they are added tokens with lstrip and rstrip.
    - it ran sentencepiece on each piece between added tokens alone, so every piece starts with "▁"
      (also "USER" after "</s>"): transformers' `legacy=True` (Metaspace prepend "always"), passed
      when the config is silent and written into the converted tokenizer_config.json.
    """
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, LlamaTokenizer

    try:
        config = json.loads((source / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    kwargs = {key: True for key in ("add_bos_token", "legacy") if key not in config}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (ImportError, ValueError, OSError) as err:  # a sentencepiece tokenizer.model needs sentencepiece + protobuf
        raise WeightsError(f"cannot read the tokenizer in {source} ({type(err).__name__}: {str(err).splitlines()[0]}); "
                           f"a tokenizer.model needs `pip install sentencepiece protobuf`") from err
    present = [t for t in (IMAGE_PATCH, IM_START, IM_END)
               if tokenizer.convert_tokens_to_ids(t) not in (None, tokenizer.unk_token_id)]
    absent = [t for t in [IMAGE_PATCH] + ([IM_START, IM_END] if use_start_end else []) if t not in present]
    if absent:
        raise WeightsError(f"the tokenizer in {source} has no {', '.join(absent)} token; expected LLaVA v1's added tokens")
    size = len(tokenizer)
    # same ids, new flags: the whitespace next to them is dropped as the slow tokenizer dropped it
    tokenizer.add_tokens([AddedToken(t, lstrip=True, rstrip=True, special=True, normalized=False) for t in present],
                         special_tokens=True)
    assert len(tokenizer) == size, "re-flagging LLaVA's added tokens must not add tokens"
    if isinstance(tokenizer, LlamaTokenizer):
        tokenizer.init_kwargs["legacy"] = tokenizer.legacy  # not saved otherwise; a reload would prepend "▁" once
    return tokenizer


def chat_template(use_start_end: bool) -> str:
    if use_start_end:
        return LLAVA_V1_CHAT_TEMPLATE
    return LLAVA_V1_CHAT_TEMPLATE.replace(f"{IM_START}{IMAGE_PATCH}{IM_END}", IMAGE_PATCH)


def v1_processor(image_processor, tokenizer, patch_size: int, use_start_end: bool):
    """transformers' LlavaProcessor for a converted LLaVA v1: `<im_patch>` as the image token, the v1
    chat template. It counts patches + num_additional_image_tokens and takes 1 off for strategy
    "default": the CLS it drops is the additional token (256 <im_patch> at 224 px, as llava-hf's
    LLaVA-1.5 sets it)."""
    from transformers import LlavaProcessor

    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=chat_template(use_start_end), image_token=IMAGE_PATCH)


def convert_llava_v1(source: str | os.PathLike, out: str | os.PathLike, clip: str | os.PathLike | None = None) -> Path:
    """Convert the original LLaVA v1 in `source` (directory or hub id) into a transformers LLaVA
    directory `out`, written only after every key and shape has been checked.

    `clip` (hub id or directory) is the CLIP tower; default the original's `mm_vision_tower`. Its
    vision weights are used unless the original carries its own tower weights.
    """
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration

    source = resolve_model_dir(source, "LLaVA v1 model")
    original = original_config(source)
    tower_dir = resolve_model_dir(clip or original["mm_vision_tower"], "CLIP tower")
    use_start_end = bool(original.get("mm_use_im_start_end", False))
    tokenizer = _tokenizer(source, use_start_end)
    config = llava_config(original, _config(tower_dir, "CLIP tower"), tokenizer)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or out.resolve() in (source.resolve(), tower_dir.resolve())):
        raise WeightsError(f"--out {out} is a file or the source directory itself; pass a new directory")
    state, unknown = _rename(read_weights(source, "LLaVA v1 directory"), read_weights(tower_dir, "CLIP tower"))
    width = config.text_config.hidden_size
    projector = state.get("model.multi_modal_projector.linear_1.weight")
    dtype = projector.dtype if projector is not None else torch.float32  # a missing projector is named by _check
    state["model.multi_modal_projector.linear_2.weight"] = torch.eye(width, dtype=dtype)
    state["model.multi_modal_projector.linear_2.bias"] = torch.zeros(width, dtype=dtype)
    with torch.device("meta"):  # no second copy of 7B weights: the model takes the loaded tensors
        model = LlavaForConditionalGeneration(config)
    _check(state, model, unknown, str(source))
    if state["model.language_model.embed_tokens.weight"].shape[0] < len(tokenizer):
        raise WeightsError(f"{source}: the embedding has fewer rows than the tokenizer's {len(tokenizer)} tokens")
    model.load_state_dict(state, strict=True, assign=True)
    model.save_pretrained(out)
    processor = v1_processor(CLIPImageProcessor.from_pretrained(tower_dir), tokenizer, config.vision_config.patch_size,
                             use_start_end)
    processor.save_pretrained(out)
    logger.info("wrote %s from %s (tower %s)", out, source, tower_dir)
    return out
