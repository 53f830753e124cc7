"""The authors' released Mug-STAN checkpoint (mmaction state dict, e.g. `Mug-StanL14.bin`) <-> VideoCLIP.

Released names (DESIGN.md "Released checkpoint keys"): the video tower lives under `backbone.` with
the CLIP vision parts flattened (`class_embedding`, `patch_embedding`, `position_embedding`,
`pre_layrnorm`, `layers.{i}`, `post_layernorm`, `visual_projection`) beside the branch
(`STAN_T_layers.{k}`, `STAN_S_layers.{k}`, `STAN_time_embed`); the text tower lives under
`text_backbone.` (`text_model.*`, `text_projection`). Below those prefixes the names are HF CLIP's,
so the translation is a prefix swap; `RELEASED_PREFIXES` is the whole table.

Reading is liberal where the release is ambiguous (`ALIASES`: raw embedding parameters, an
`embeddings.` level, transformers-5 text names, a `module.` prefix, `state_dict`/`model` wrappers,
old `position_ids` buffers); writing is strict (`to_released_state_dict` produces the canonical
names only). Every key is accounted for and every shape asserted before anything is copied.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import shutil
from pathlib import Path

import torch

from stanchat.errors import WeightsError
from stanchat.hub import resolve_model_dir
from stanchat.stan import STANConfig
from stanchat.videoclip import VideoCLIP, VideoCLIPConfig, load_state_dict_strict

logger = logging.getLogger(__name__)

# (VideoCLIP state-dict name, released name). An entry ending in "." is a prefix; otherwise one key.
RELEASED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("clip.vision_model.embeddings.class_embedding", "backbone.class_embedding"),
    ("clip.vision_model.embeddings.patch_embedding.", "backbone.patch_embedding."),
    ("clip.vision_model.embeddings.position_embedding.", "backbone.position_embedding."),
    ("clip.vision_model.pre_layrnorm.", "backbone.pre_layrnorm."),
    ("clip.vision_model.encoder.layers.", "backbone.layers."),
    ("clip.vision_model.post_layernorm.", "backbone.post_layernorm."),
    ("clip.visual_projection.", "backbone.visual_projection."),
    ("stan.temporal_layers.", "backbone.STAN_T_layers."),
    ("stan.spatial_layers.", "backbone.STAN_S_layers."),
    ("stan.time_embed.", "backbone.STAN_time_embed."),
    ("clip.text_model.", "text_backbone.text_model."),
    ("clip.text_projection.", "text_backbone.text_projection."),
    ("clip.logit_scale", "logit_scale"),
)
# released keys a checkpoint may leave out; the value used instead is documented where it is filled in
OPTIONAL_KEYS = ("logit_scale",)
# alternative spellings accepted on input -> canonical released names
ALIASES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"^backbone\.embeddings\.(class_embedding|patch_embedding|position_embedding)"), r"backbone.\1"),
    (re.compile(r"^backbone\.(patch_embedding|position_embedding)$"), r"backbone.\1.weight"),  # raw parameters
    (re.compile(r"^backbone\.encoder\.layers\."), "backbone.layers."),
    (re.compile(r"^text_backbone\.(embeddings|encoder|final_layer_norm)\."), r"text_backbone.text_model.\1."),
)
# non-persistent buffers that older transformers versions saved; the model rebuilds them
IGNORED_KEY = re.compile(r"(^|\.)position_ids$")
# mmengine/runner checkpoints wrap the state dict in one of these (possibly nested, beside meta/optimizer)
WRAPPER_KEYS = ("state_dict", "model", "module")
# prefixes every key may carry: DataParallel/DDP (`module.`) and a model wrapped by its runner (`model.`)
WRAPPER_PREFIXES = ("module.", "model.")
STAN_KEY = re.compile(r"^backbone\.STAN_([ST])_layers\.(\d+)\.")
UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
TIME_EMBED_KEY = "backbone.STAN_time_embed.weight"
EXPECTED = ("the released Mug-STAN state dict (keys backbone.STAN_S_layers.{k}.*, backbone.STAN_T_layers.{k}.*, "
            "backbone.STAN_time_embed.weight, backbone.layers.{i}.*, text_backbone.text_model.*)")
# files copied from the --clip directory so the converted directory carries its tokenizer and processor
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "added_tokens.json", "preprocessor_config.json", "processor_config.json")


def released_name(name: str) -> str:
    """The released checkpoint's name for a VideoCLIP state-dict key (the one translation table)."""
    for ours, theirs in RELEASED_PREFIXES:
        if name == ours or (ours.endswith(".") and name.startswith(ours)):
            return theirs + name[len(ours):]
    raise KeyError(f"{name} has no released equivalent (the release has no STAN input projections)")


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file as a flat state dict of tensors without executing any pickled code.

    Pickles (`.bin`/`.pth`) load with `torch.load(weights_only=True)`; `.safetensors` load directly.
    A `{"state_dict": ...}`, `{"model": ...}` or `{"module": ...}` wrapper (nested too) is unwrapped
    (`unwrap`). Anything else is a one-line WeightsError naming what was expected.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist or is not a file; pass the released .bin/.pth file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as err:  # corrupt header, truncated file: all mean "not readable"
            raise WeightsError(f"{path} is not a readable safetensors file ({type(err).__name__}); expected {EXPECTED}") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names the refused callable ("Unsupported global: GLOBAL numpy...") when the pickle is
        # well formed but wants arbitrary objects; anything else is a broken or foreign file
        refused = UNSAFE_GLOBAL.search(str(err))
        if refused is None:
            raise WeightsError(f"{path} is not a PyTorch checkpoint (the weights_only unpickler rejects it); "
                               f"expected {EXPECTED}") from err
        raise WeightsError(
            f"{path} holds pickled Python objects besides tensors ({refused.group(1)}); stanchat loads pickles with "
            f"weights_only=True and never runs their code: save only the state dict (torch.save(model.state_dict(), ...))"
        ) from err
    except Exception as err:  # garbage bytes surface as KeyError, EOFError, RuntimeError...
        raise WeightsError(f"{path} is not a PyTorch checkpoint ({type(err).__name__}); expected {EXPECTED}") from err
    state, wrapper = unwrap(obj, path)
    logger.info("%s: %d tensors, %s", path, len(state), wrapper)
    return state


def unwrap(obj: object, path: Path | str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """The state dict inside a loaded checkpoint and a description of the wrapper it came in
    ("raw state dict", "state_dict wrapper", "model > state_dict wrapper", ...)."""
    found = []
    while isinstance(obj, dict) and len(found) < 3:
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        found.append(key)
        obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path} holds {type(obj).__name__ if obj else 'nothing'}, not a state dict; expected {EXPECTED}")
    odd = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if odd:
        raise WeightsError(f"{path} has entries that are not named tensors ({', '.join(odd[:5])}); expected {EXPECTED}")
    return obj, (" > ".join(found) + " wrapper") if found else "raw state dict"


def normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical released names: drop `module.`/`model.` prefixes every key carries (`WRAPPER_PREFIXES`)
    and old `position_ids` buffers, apply `ALIASES`."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped = True
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if IGNORED_KEY.search(key):
            continue
        canonical = key
        for pattern, replacement in ALIASES:
            canonical = pattern.sub(replacement, canonical)
        if canonical in out:
            raise WeightsError(f"checkpoint holds {canonical} twice (once as {key}); keep one spelling")
        out[canonical] = value
    return out


def stan_config_from_released(state: dict[str, torch.Tensor], depth: int | None = None,
                              origin: str = "checkpoint") -> STANConfig:
    """The STAN branch a (normalised) released state dict holds: depth K from `STAN_{S,T}_layers.{k}`,
    max frames from `STAN_time_embed`, ending at the last CLIP layer (retrieval). Raises a one-line
    WeightsError when `state` is not a Mug-STAN checkpoint or `depth` disagrees with it."""
    layers: dict[str, set[int]] = {"S": set(), "T": set()}
    for key in state:
        match = STAN_KEY.match(key)
        if match:
            layers[match.group(1)].add(int(match.group(2)))
    if not layers["S"] and not layers["T"]:
        sample = ", ".join(sorted(state)[:3])
        raise WeightsError(f"{origin} is not a Mug-STAN checkpoint: it has no STAN keys (found {len(state)} keys "
                           f"such as {sample}); expected {EXPECTED}")
    found = len(layers["S"])
    if layers["S"] != set(range(found)) or layers["T"] != layers["S"]:
        raise WeightsError(f"{origin} has STAN spatial layers {sorted(layers['S'])} and temporal layers "
                           f"{sorted(layers['T'])}; expected both to be 0..K-1")
    if depth is not None and depth != found:
        raise WeightsError(f"--depth {depth} does not match {origin}, which holds {found} STAN layers; "
                           f"drop --depth or pass {found}")
    if TIME_EMBED_KEY not in state:
        raise WeightsError(f"{origin} has STAN layers but no {TIME_EMBED_KEY}; expected {EXPECTED}")
    return STANConfig(depth=found, end_layer=-1, max_frames=state[TIME_EMBED_KEY].shape[0])


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")


def from_released_state_dict(state: dict[str, torch.Tensor], model: VideoCLIP,
                             origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Translate a normalised released state dict into `model`'s names, asserting that the key sets
    match one to one (missing, unknown keys named) and that every shape fits, before any copy.
    A missing `logit_scale` becomes log(config.logit_scale), the fixed tau the release trained with."""
    own = model.state_dict()
    wanted = {released_name(k): k for k in own}  # released name -> ours
    unknown = sorted(set(state) - set(wanted))
    missing = sorted(set(wanted) - set(state) - set(OPTIONAL_KEYS))
    shapes = sorted(f"{k} {tuple(v.shape)} != {tuple(own[wanted[k]].shape)}"
                    for k, v in state.items() if k in wanted and v.shape != own[wanted[k]].shape)
    if unknown or missing or shapes:
        problems = [f"{what}: {_names(keys)}" for what, keys in
                    (("unknown keys", unknown), ("missing keys", missing), ("shape mismatches", shapes)) if keys]
        raise WeightsError(f"{origin} does not fit the VideoCLIP built from the --clip config: "
                           + "; ".join(problems) + "; pass the --clip the checkpoint was trained from")
    out = {wanted[k]: v for k, v in state.items()}
    for key in OPTIONAL_KEYS:
        if key not in state:
            logger.info("%s has no %s; using log(%s)", origin, key, model.config.logit_scale)
            out[wanted[key]] = torch.tensor(math.log(model.config.logit_scale), dtype=own[wanted[key]].dtype)
    assert len(out) == len(own), (len(out), len(own))  # one tensor per parameter, no more, no less
    return out


def to_released_state_dict(model: VideoCLIP) -> dict[str, torch.Tensor]:
    """`model`'s weights under the released checkpoint's names (the inverse of `from_released_state_dict`).
    Models with STAN input projections have no released form and raise ValueError."""
    if model.stan.input_projs is not None:
        raise ValueError("the released layout has no STAN input projections; this model cannot be written in it")
    if model.end != model.clip.config.vision_config.num_hidden_layers - 1:
        raise ValueError(f"the released layout pairs STAN with the last CLIP layers; this model ends at layer {model.end}")
    return {released_name(k): v.detach().clone() for k, v in model.state_dict().items()}


def load_official(checkpoint: str | os.PathLike, clip_config: dict, depth: int | None = None,
                  source: str = "") -> VideoCLIP:
    """A VideoCLIP whose every weight (CLIP towers included) comes from the released checkpoint.
    `clip_config` (a CLIPConfig dict) supplies only the architecture."""
    origin = str(checkpoint)
    state = normalise_keys(load_checkpoint(checkpoint))
    stan = stan_config_from_released(state, depth, origin)
    model = VideoCLIP(VideoCLIPConfig(clip=clip_config, stan=stan, source=source or origin))
    load_state_dict_strict(model, from_released_state_dict(state, model, origin), origin)
    return model.eval()


def _clip_config(clip: str | os.PathLike) -> tuple[Path, dict]:
    from transformers import CLIPConfig

    directory = resolve_model_dir(clip, "CLIP model")
    try:
        config = CLIPConfig.from_pretrained(directory)
    except Exception as err:  # no config.json, malformed JSON, another model type
        raise WeightsError(f"--clip {clip} has no readable CLIP config.json ({type(err).__name__}); pass a HF CLIP "
                           f"directory or hub id such as openai/clip-vit-large-patch14") from err
    if config.model_type != "clip":
        raise WeightsError(f"--clip {clip} is a {config.model_type!r} model, not CLIP; pass e.g. openai/clip-vit-large-patch14")
    return directory, json.loads(config.to_json_string())


def convert_official(checkpoint: str | os.PathLike, clip: str | os.PathLike, out: str | os.PathLike,
                     depth: int | None = None) -> Path:
    """Convert the released checkpoint into a VideoCLIP directory at `out` and return it.

    `clip` (hub id or directory) supplies only the CLIP architecture config; no CLIP weights are read.
    The tokenizer and image-processor files found beside that config (`PROCESSOR_FILES`) are copied
    into `out`, so the result is self-contained. `depth` (optional) must equal the checkpoint's K.
    """
    directory, clip_config = _clip_config(clip)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or out.resolve() == directory.resolve()):
        raise WeightsError(f"--out {out} is a file or the --clip directory itself; pass a new directory")
    source = f"{Path(checkpoint).name} (released Mug-STAN) on {clip}"
    model = load_official(checkpoint, clip_config, depth=depth, source=source)
    model.save_pretrained(out)
    copied = [name for name in PROCESSOR_FILES if (directory / name).is_file()]
    for name in copied:
        shutil.copyfile(directory / name, out / name)
    logger.info("wrote %s (STAN depth %d; copied %s)", out, model.config.stan.depth, ", ".join(copied) or "no tokenizer files")
    return out
