"""Named presets: which LLaVA and which converted STAN branch make up a video chat model.

A preset is data, not code: a LLaVA (hub id or directory of a transformers
`LlavaForConditionalGeneration` / `LlavaNextForConditionalGeneration` with its processor, or an
original-layout LLaVA v1 hub repo converted once into `$STANCHAT_HOME`) and a STAN directory name
under `$STANCHAT_HOME` (default `~/.cache/stanchat`), converted from the released file the preset
names (hub repo + file; `stanchat.fetch` fetches and converts both on first use). Each preset
also says which tower its STAN was trained on and which it runs on (`pairing`): the released
Mug-STAN was post-pretrained with its whole CLIP-L/14 tuned and paired with that tower's layers 20-23,
so every graft onto a stock tower (paired with layers 19-22, ending at LLaVA's feature layer -2) differs
from training; the v1 preset runs on the paper's tower at 224 px, the closest pairing offered.
A bundled preset (`tiny`) ships inside the package as `stanchat/presets/<name>/{llava,stan}`,
so it works on a fresh install with no download.
Unknown names fail with the list of valid names; nothing is chosen by substrings of names.

`resolve(model, llava, stan, revision)` turns a preset and the `--llava/--stan` overrides into one
`ModelSpec`, in one pass: every path (LLaVA hub id or folder, STAN folder), the preset whose released
files supply the parts not overridden, the pinned revision, and which of those parts are missing on
disk. Data flows one way: this module never imports `stanchat.fetch`; fetch fills a spec's missing
parts (`stanchat.fetch.ensure`), `stanchat.chat.load` reads its paths, `stanchat models` lists it and
`stanchat pull` fetches every part of it. This module imports nothing heavy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from stanchat.errors import StanchatError, WeightsError
from stanchat.hub import hub_cached

# LLaVA-1.5's template (llava-hf): "USER: <image>\n{question} ASSISTANT: {answer} USER: ..."
LLAVA_15_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# LLaVA v1's template (vicuna v1.1 conversation, as LLaVA-Lightning and Video-ChatGPT prompt it; separators
# " " and "</s>"): "{system} USER: {question}\n<im_start><im_patch><im_end> ASSISTANT: {answer}</s>USER: ...".
# The one <im_patch> is expanded to the video's N tokens, as the original code expands it per image. The
# converted tokenizer drops the whitespace beside <im_start>/<im_patch>/<im_end> (no "\n" token before
# <im_start>), as the slow tokenizer LLaVA v1 was trained with did (stanchat.convert.llava_v1._tokenizer).
LLAVA_V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                   "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAVA_V1_CHAT_TEMPLATE = (
    '{{ "' + LLAVA_V1_SYSTEM + ' " }}'  # double quotes: the system line holds an apostrophe
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'USER: ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '\n<im_start><im_patch><im_end>' }}{% endfor %}{{ ' ' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ '</s>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

HOME_ENV = "STANCHAT_HOME"  # the one definition: converted weights, fetched LLaVA v1 conversions, eval caches
DEFAULT_HOME = "~/.cache/stanchat"
STAN_FILES = ("config.json", "model.safetensors")  # what VideoCLIP.save_pretrained writes
GB = 1e9
# what `stanchat convert official` reads from --clip: the architecture config, and the text tokenizer and
# image-processor files it copies beside the STAN (no CLIP weights: every weight is in the released file)
CLIP_CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                     "special_tokens_map.json", "preprocessor_config.json")
# paper: the paper's tower (CLIP-L/14 at 224 px, as its chat demo): closer, not identical (stock weights,
# layers 19-22); transfer: another tower; own: trained together with this LLaVA
PAIRINGS = ("paper", "transfer", "own")


@dataclass(frozen=True)
class Preset:
    name: str  # registry key, e.g. "llava-1.5-7b"
    llava: str  # hub id or directory of the LLaVA model and processor (a directory name under $STANCHAT_HOME
    #             when `llava_source` is set: the conversion `stanchat pull` writes)
    stan: str  # directory name under $STANCHAT_HOME of the converted VideoCLIP (STAN weights)
    stan_checkpoint: str  # the authors' released file that `stanchat convert official` reads
    stan_clip: str  # the HF CLIP architecture that checkpoint was trained on
    description: str  # one line for listings
    bundled: bool = False  # shipped inside the package: `llava` and `stan` name folders of stanchat/presets/<name>/
    stan_repo: str = ""  # hub repo holding `stan_checkpoint` (fetched on first use); "" for a bundled preset
    llava_source: str = ""  # hub repo of an original-layout LLaVA v1 that `stanchat convert llava` turns into `llava`
    stan_trained_on: str = ""  # the tower (and layers) the STAN was post-pretrained on
    runs_on: str = ""  # the tower the STAN runs on in this preset, and the layer the graft ends at
    pairing: str = "transfer"  # one of PAIRINGS
    note: str = ""  # what else a user should know (e.g. a tuned tower)
    stan_bytes: float = 0.0  # download size of `stan_checkpoint` (estimate, see README "On a GPU")
    llava_bytes: float = 0.0  # download size of the LLaVA (its hub files, plus the tower for a v1 conversion)

    def __post_init__(self):
        if self.pairing not in PAIRINGS:
            raise ValueError(f"preset {self.name}: pairing {self.pairing!r} is not one of {PAIRINGS}")


# layers are 0-based, of 24: the released STAN pairs with 20-23 (the last four); the graft ends it at LLaVA's
# feature layer -2 (layer 22), so it pairs with 19-22 (tests/test_presets.py derives both from stanchat.stan)
_MUG_STAN_L14 = dict(stan="mug-stan-l14", stan_checkpoint="Mug-StanL14.bin", stan_clip="openai/clip-vit-large-patch14",
                     stan_repo="farewellthree/Mug_STAN_Weight", stan_bytes=2.0 * GB,
                     stan_trained_on="openai/clip-vit-large-patch14 at 224 px, the whole tower tuned in post-pretraining "
                                     "(the file carries its own tower weights; the L/14 config is not published, the "
                                     "authors' one published config, B/32 on WebVid, sets frozen_layers=False), STAN "
                                     "paired with its layers 20-23")
_TOWER_224 = ("stock openai/clip-vit-large-patch14, 224 px (256 patches), STAN paired with layers 19-22 (ending at "
              "LLaVA's feature layer -2)")
_TOWER_336 = ("stock openai/clip-vit-large-patch14-336, 336 px (576 patches), STAN paired with layers 19-22 (ending "
              "at LLaVA's feature layer -2)")
_TUNED_336 = ("LLaVA-NeXT's tuned openai/clip-vit-large-patch14-336, 336 px (576 patches), STAN paired with layers "
              "19-22 (ending at LLaVA's feature layer -2)")
_V1_NOTE = ("the paper's tower, 224 px: a closer pairing, not identical (the STAN was trained with that tower tuned, "
            "on layers 20-23; here it runs on the stock tower, layers 19-22). Original LLaVA layout: pulled once and "
            "converted with `stanchat convert llava`; the prompt keeps <im_start>/<im_end> around the video tokens")
_NEXT_NOTE = ("LLaVA-NeXT v1.6 tuned its tower in training, so even its weights are not stock CLIP; a video is "
              "one base-resolution image (each frame resized whole to 336 x 336, no anyres tiles) followed by the "
              "model's image_newline")

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", **_MUG_STAN_L14, runs_on=_TOWER_336, llava_bytes=14.1 * GB,
               description="LLaVA-1.5 7B (CLIP-L/14 336 px) + Mug-STAN L/14 branch"),
        Preset("llava-1.5-13b", "llava-hf/llava-1.5-13b-hf", **_MUG_STAN_L14, runs_on=_TOWER_336, llava_bytes=26.7 * GB,
               description="LLaVA-1.5 13B (CLIP-L/14 336 px) + Mug-STAN L/14 branch"),
        Preset("llava-v1-7b-lightening", "llava-v1-7b-lightening-hf", **_MUG_STAN_L14, pairing="paper",
               llava_source="mmaaz60/LLaVA-7B-Lightening-v1-1", runs_on=_TOWER_224, llava_bytes=(13.5 + 1.7) * GB,
               description="LLaVA v1 7B Lightening (CLIP-L/14 224 px, the LLaVA Video-ChatGPT loads) + Mug-STAN L/14",
               note=_V1_NOTE),
        Preset("llava-next-vicuna-7b", "llava-hf/llava-v1.6-vicuna-7b-hf", **_MUG_STAN_L14, runs_on=_TUNED_336,
               llava_bytes=14.1 * GB, note=_NEXT_NOTE,
               description="LLaVA-NeXT v1.6 Vicuna 7B (CLIP-L/14 336 px, tuned) + Mug-STAN L/14 branch"),
        Preset("llava-next-mistral-7b", "llava-hf/llava-v1.6-mistral-7b-hf", **_MUG_STAN_L14, runs_on=_TUNED_336,
               llava_bytes=15.1 * GB, note=_NEXT_NOTE,
               description="LLaVA-NeXT v1.6 Mistral 7B (CLIP-L/14 336 px, tuned) + Mug-STAN L/14 branch"),
        Preset("tiny", "llava", "stan", stan_checkpoint="", stan_clip="", bundled=True, pairing="own",
               stan_trained_on="the tiny LLaVA's own tower (trained together by training.recipes.tiny)",
               runs_on="the tiny LLaVA's tower (32 px), branch ends at its feature layer",
               description="bundled 16 MB stanchat trained on the synthetic world by training.recipes.tiny (CPU)"),
    )
}
DEFAULT_PRESET = "llava-1.5-7b"


PARTS = ("stan", "llava")  # a model's two parts, in the order a preset's are fetched
ORIGIN_FILE = "origin.json"  # beside a fetched conversion: which hub file and revision it was converted from


@dataclass(frozen=True)
class ModelSpec:
    """One model, worked out once by `resolve`: where each part is, which preset supplies the parts not
    overridden (its released files are where a missing one comes from), and which of those are missing.
    `stanchat.fetch.ensure` fills the missing parts; `stanchat.chat.load` reads the paths."""

    name: str  # what answers report as `model`: the preset name, or the overriding paths
    llava: str  # hub id or directory of the LLaVA
    stan: Path  # directory of the STAN (a saved VideoCLIP)
    source: Preset | None = None  # the preset the parts come from (None when --llava and --stan replace both)
    parts: tuple[str, ...] = ()  # the parts `source` supplies, of PARTS (those --llava/--stan do not replace)
    missing: tuple[str, ...] = ()  # of `parts`, those not on disk: not converted, not in the hub cache, or
    #                                (the STAN) converted from another revision than a pinned `revision`
    revision: str | None = None  # hub revision of the released STAN file (None: any converted one; main to fetch)

    @property
    def preset(self) -> str | None:
        """The name of the preset it came from (None when --llava and --stan replace both parts)."""
        return self.source.name if self.source is not None else None

    def require(self) -> ModelSpec:
        """This spec, or one line naming how to get a missing part that loading cannot fetch by itself
        (a STAN, a converted LLaVA v1, a bundled part); a hub LLaVA not yet cached is left to
        `from_pretrained`."""
        for part in self.missing:
            if (error := missing_part(self, part)) is not None:
                raise error
        return self


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
    """The LLaVA hub id or directory of a preset (a package folder for a bundled one, a folder under
    $STANCHAT_HOME for one converted from an original-layout LLaVA)."""
    if preset.bundled:
        return str(bundled_dir(preset) / preset.llava)
    return str(stanchat_home() / preset.llava) if preset.llava_source else preset.llava


def preset_stan_dir(preset: Preset) -> Path:
    """The directory a preset's STAN is expected in, whether or not it exists yet."""
    return bundled_dir(preset) / preset.stan if preset.bundled else stanchat_home() / preset.stan


def stan_is_converted(directory: Path) -> bool:
    return all((directory / f).is_file() for f in STAN_FILES)


def read_origin(directory: Path) -> dict:
    """The origin.json a fetched conversion wrote beside it ({} when there is none)."""
    try:
        return json.loads((directory / ORIGIN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def stan_ready(directory: Path, revision: str | None = None) -> bool:
    """A converted STAN is in `directory` (converted from `revision` of its released file, when pinned)."""
    return stan_is_converted(directory) and (revision is None or read_origin(directory).get("revision") == revision)


def part_present(preset: Preset, part: str, path: str | Path, revision: str | None = None) -> bool:
    """Whether `part` ("stan" or "llava") of `preset`, expected at `path`, is on disk: a converted STAN
    (from `revision` when pinned; a bundled one has no revision), a LLaVA folder with its config, or a hub
    LLaVA (`path` its id) whose config and weights are all in the hub cache."""
    if part == "stan":
        return stan_ready(Path(path), revision if preset.stan_repo else None)
    if preset.bundled or preset.llava_source:
        return (Path(path) / "config.json").is_file()
    return hub_cached(str(path))


def clip_download(preset: Preset) -> str:
    """The `hf download` of the files `stanchat convert official --clip` reads (no weights)."""
    return f"hf download {preset.stan_clip} {' '.join(CLIP_CONFIG_FILES)}"


def fetch_commands(preset: Preset) -> str:
    """How to get a preset's STAN by hand: the hub downloads and the conversion, for one error line."""
    out = preset_stan_dir(preset)
    return (f"the released STAN is {preset.stan_checkpoint} in the hub repo {preset.stan_repo}: run "
            f"`hf download {preset.stan_repo} {preset.stan_checkpoint}` and `{clip_download(preset)}` (its CLIP "
            f"architecture and tokenizer, no weights) on a machine with network, then "
            f"`stanchat convert official FILE --clip {preset.stan_clip} --out {out}` (FILE: the path `hf download` "
            f"printed), or `stanchat pull {preset.name}` where the hub is reachable")


def missing_part(spec: ModelSpec, part: str) -> WeightsError | None:
    """The one line saying that `part` of `spec` is not on disk and how to get it by hand; None for a
    hub LLaVA not yet cached (`from_pretrained` downloads it, or says in one line why it cannot)."""
    preset = spec.source
    if preset.bundled:
        where = spec.stan if part == "stan" else spec.llava
        return WeightsError(f"the bundled preset {preset.name!r} is missing from {where}; reinstall stanchat "
                            f"or rebuild it with `python -m training.recipes.tiny`")
    if part == "stan" and stan_is_converted(spec.stan):  # converted, from another revision than the pinned one
        return WeightsError(f"STAN weights for preset {preset.name!r} in {spec.stan} were converted from revision "
                            f"{read_origin(spec.stan).get('revision')!r}, not {spec.revision!r}; run "
                            f"`stanchat pull {preset.name} --revision {spec.revision}`")
    if part == "stan":
        return WeightsError(f"STAN weights for preset {preset.name!r} are not in {spec.stan}; "
                            f"{fetch_commands(preset)} (or pass --stan DIR)")
    if preset.llava_source:
        return WeightsError(f"preset {preset.name!r} needs {preset.llava_source} (original LLaVA layout) converted "
                            f"into {spec.llava}; run `stanchat pull {preset.name}`, or `hf download "
                            f"{preset.llava_source}` and `stanchat convert llava DIR --out {spec.llava}`")
    return None


def resolve(model: str | None = None, llava: str | None = None, stan: str | os.PathLike | None = None,
            revision: str | None = None) -> ModelSpec:
    """The one spec of a preset with optional overrides: `llava` replaces the preset's LLaVA, `stan`
    its STAN directory (which must exist); with both given, `model` is not needed. The preset's parts
    that are not on disk are listed in `missing`, not raised: `stanchat.fetch.ensure` fetches them, and
    `ModelSpec.require()` raises one line naming how to get them by hand. `revision` pins the hub revision
    of the released STAN file (a STAN converted from another one is missing)."""
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
    llava_ref = str(llava) if llava is not None else preset_llava(preset)
    parts = tuple(part for part, given in zip(PARTS, (stan, llava)) if given is None)
    paths = {"stan": stan_dir, "llava": llava_ref}
    missing = tuple(part for part in parts if not part_present(preset, part, paths[part], revision))
    overridden = llava is not None or stan is not None
    name = f"llava={llava_ref} stan={stan_dir}" if preset is None or overridden else preset.name
    return ModelSpec(name=name, llava=llava_ref, stan=stan_dir, source=preset, parts=parts, missing=missing,
                     revision=revision)


def to_spec(model: str | ModelSpec | None = None, llava: str | None = None, stan: str | os.PathLike | None = None,
            revision: str | None = None) -> ModelSpec:
    """`model` itself when it is a resolved spec, else `resolve(model, llava, stan, revision)`."""
    if not isinstance(model, ModelSpec):
        return resolve(model, llava, stan, revision)
    if (llava, stan, revision) != (None, None, None):
        raise TypeError("llava, stan and revision are resolve()'s arguments; a resolved ModelSpec takes none")
    return model
