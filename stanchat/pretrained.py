"""Named presets: which LLaVA and which converted STAN branch make up a video chat model.

A preset is data, not code: a LLaVA (hub id or directory of a transformers
`LlavaForConditionalGeneration` with its processor) and a STAN directory name under
`$STANCHAT_HOME` (default `~/.cache/stanchat`), written by `stanchat convert official`.
A bundled preset (`tiny`) ships inside the package as `stanchat/presets/<name>/{llava,stan}`,
so it works on a fresh install with no download.
Unknown names fail with the list of valid names; nothing is chosen by substrings of names.
This module imports nothing heavy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stanchat.errors import StanchatError, WeightsError

# LLaVA-1.5's template (llava-hf): "USER: <image>\n{question} ASSISTANT: {answer} USER: ..."
LLAVA_15_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

HOME_ENV = "STANCHAT_HOME"
DEFAULT_HOME = "~/.cache/stanchat"
STAN_FILES = ("config.json", "model.safetensors")  # what VideoCLIP.save_pretrained writes


@dataclass(frozen=True)
class Preset:
    name: str  # registry key, e.g. "llava-1.5-7b"
    llava: str  # hub id or directory of the LLaVA model and processor
    stan: str  # directory name under $STANCHAT_HOME of the converted VideoCLIP (STAN weights)
    stan_checkpoint: str  # the authors' released file that `stanchat convert official` reads
    stan_clip: str  # the HF CLIP architecture that checkpoint was trained on
    description: str  # one line for listings
    bundled: bool = False  # shipped inside the package: `llava` and `stan` name folders of stanchat/presets/<name>/


_MUG_STAN_L14 = dict(stan="mug-stan-l14", stan_checkpoint="Mug-StanL14.bin", stan_clip="openai/clip-vit-large-patch14")

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", **_MUG_STAN_L14,
               description="LLaVA-1.5 7B (CLIP-L/14 336 px) + Mug-STAN L/14 branch"),
        Preset("llava-1.5-13b", "llava-hf/llava-1.5-13b-hf", **_MUG_STAN_L14,
               description="LLaVA-1.5 13B (CLIP-L/14 336 px) + Mug-STAN L/14 branch"),
        Preset("tiny", "llava", "stan", stan_checkpoint="", stan_clip="", bundled=True,
               description="bundled 16 MB stanchat trained on the synthetic world by training.recipes.tiny (CPU)"),
    )
}
DEFAULT_PRESET = "llava-1.5-7b"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what answers report as `model`: the preset name, or the overriding paths
    llava: str  # hub id or directory of the LLaVA
    stan: Path  # directory of the STAN (a saved VideoCLIP)


def stanchat_home() -> Path:
    """Where converted weights live: $STANCHAT_HOME, or ~/.cache/stanchat."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called `name`; an unknown name raises one line listing the valid ones."""
    if name not in PRESETS:
        raise StanchatError(f"unknown model preset {name!r}; valid presets: {', '.join(preset_names())} "
                            f"(or pass --llava DIR_OR_ID --stan DIR)")
    return PRESETS[name]


def bundled_dir(preset: Preset) -> Path:
    """The package folder of a bundled preset (`stanchat/presets/<name>`)."""
    from importlib.resources import files

    return Path(str(files("stanchat") / "presets" / preset.name))


def preset_llava(preset: Preset) -> str:
    """The LLaVA hub id or directory of a preset (a package folder for a bundled one)."""
    return str(bundled_dir(preset) / preset.llava) if preset.bundled else preset.llava


def preset_stan_dir(preset: Preset) -> Path:
    """The directory a preset's STAN is expected in, whether or not it exists yet."""
    return bundled_dir(preset) / preset.stan if preset.bundled else stanchat_home() / preset.stan


def resolve(model: str | None = None, llava: str | None = None, stan: str | os.PathLike | None = None) -> ModelSpec:
    """Combine a preset with optional overrides. `llava` replaces the preset's LLaVA, `stan` its
    STAN directory; with both given, `model` is not needed. A preset's missing STAN raises one line
    with the `stanchat convert` command that writes it."""
    if model is not None:
        preset = get_preset(model)
    else:
        preset = None if (llava is not None and stan is not None) else get_preset(DEFAULT_PRESET)
    if stan is not None:
        stan_dir = Path(stan).expanduser()
        if not stan_dir.is_dir():
            raise WeightsError(f"STAN directory {stan_dir} does not exist; pass a directory written by "
                               f"`stanchat convert` or VideoCLIP.save_pretrained")
    else:
        stan_dir = preset_stan_dir(preset)
        if not all((stan_dir / f).is_file() for f in STAN_FILES):
            if preset.bundled:
                raise WeightsError(f"the bundled preset {preset.name!r} is missing from {stan_dir}; reinstall stanchat "
                                   f"or rebuild it with `python -m training.recipes.tiny`")
            raise WeightsError(
                f"STAN weights for preset {preset.name!r} are not in {stan_dir}; run `stanchat convert official "
                f"{preset.stan_checkpoint} --clip {preset.stan_clip} --out {stan_dir}` (or pass --stan DIR)"
            )
    if preset is not None and llava is None and stan is None:
        return ModelSpec(name=preset.name, llava=preset_llava(preset), stan=stan_dir)
    llava_ref = llava if llava is not None else preset_llava(preset)
    return ModelSpec(name=f"llava={llava_ref} stan={stan_dir}", llava=str(llava_ref), stan=stan_dir)
