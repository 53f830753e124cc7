"""Settings of every evaluation, one dataclass per command, each value with its one default.

Standard library only, so `stanchat eval --help` builds its parser from these defaults without
importing numpy or torch. Every field ends up in the run's results JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stanchat.errors import StanchatError
from stanchat.options import SCORING_MODES  # noqa: F401  (re-exported: the eval modules import it from here)
from stanchat.pretrained import stanchat_home

TIE_RULES = ("pessimistic", "optimistic", "mean")  # stanchat.eval.metrics.TIE_RULES
PROTOCOL_TOKENS = 32  # text tokens of the MSR-VTT protocol (CLIP4Clip); `tokens=None` uses it where it fits
RAW_NAME = "{}"  # the recognition "template" that is the class name itself
SHORT_ANSWER = "{question}\nAnswer the question using a single word or phrase."  # LLaVA-1.5's short-answer prompt


def default_cache_dir() -> Path:
    """`$STANCHAT_HOME/eval-features` (default `~/.cache/stanchat/eval-features`)."""
    return stanchat_home() / "eval-features"


@dataclass
class EvalConfig:
    dataset: str  # registry name in stanchat.datasets (msrvtt, k400, jsonl, ...)
    data_root: Path  # folder the annotation's videos live under
    model: str | None  # saved model directory (VideoCLIP or CoCa) or preset name (videoqa: chat preset, None with --llava + --stan)
    out: Path  # folder for <task>.json, <task>.md, <task>.png
    ann: Path | None = None  # annotation file; None: the dataset's usual file under data_root
    split: str | None = None  # annotation split; None: the dataset's evaluation split
    cache_dir: Path | None = field(default_factory=default_cache_dir)  # video-feature cache; None: off
    batch_size: int = 8  # videos per forward pass
    workers: int = 2  # threads decoding ahead of the model (0: decode in turn)
    device: str | None = None  # torch device; None: accelerate's choice (the process's GPU, else CPU)


@dataclass
class RetrievalConfig(EvalConfig):
    frames: int = 12  # frames per video (MSR-VTT protocol: 12)
    tokens: int | None = None  # text tokens, padded/truncated; None: PROTOCOL_TOKENS, or the text tower's length if shorter
    scoring: str = "mean"  # one of SCORING_MODES
    dual_softmax: bool = False  # re-rank with DSL (CAMoE); flagged in the results
    dsl_temperature: float = 100.0  # DSL softmax scale on cosine scores (CLIP's logit scale)
    ties: str = "pessimistic"  # one of TIE_RULES
    chunk_size: int = 128  # Mug scores blocks of chunk x chunk pairs, bounding memory


@dataclass
class RecognitionConfig(EvalConfig):
    frames: int = 8  # frames per view
    tokens: int | None = None  # text tokens per prompt; None: as RetrievalConfig.tokens
    templates: tuple[str, ...] = (RAW_NAME,)  # prompt templates, "{}" is replaced by the class name
    scoring: str = "mean"  # one of SCORING_MODES
    clips: int = 1  # temporal views per video
    crops: int = 1  # spatial views per clip: 1 (centre) or 3 (both ends and centre of the long side)
    ties: str = "pessimistic"  # one of TIE_RULES
    chunk_size: int = 128  # Mug block size


@dataclass
class VideoQAConfig(EvalConfig):
    llava: str | None = None  # overrides the preset's LLaVA (hub id or directory)
    stan: str | None = None  # overrides the preset's STAN directory
    frames: int = 16  # frames per video
    temporal: str = "stan"  # how frames reach the LLM: stan | mean | concat
    prompt: str = SHORT_ANSWER  # question template, "{question}" is replaced
    max_new_tokens: int = 32  # answer length limit in LLM tokens (QA answers are short)
    dtype: str | None = None  # float32 | float16 | bfloat16; None: stanchat.load's choice
    judge_model: str | None = None  # local transformers causal LM directory used as judge
    judge_url: str | None = None  # OpenAI-compatible server used as judge
    judge_name: str | None = None  # the model name to ask that server for
    judge_key_env: str = "OPENAI_API_KEY"  # environment variable with the server's API key, read if set


@dataclass
class ReverseConfig:
    data: Path  # folder of videos, or a JSONL file (see stanchat.eval.reverse)
    model: str  # saved model directory (VideoCLIP or CoCa) or preset name
    out: Path  # folder for reverse.json, reverse.md, reverse.png
    data_root: Path | None = None  # folder JSONL paths are relative to; None: the JSONL's folder
    frames: int = 8  # frames per clip
    tokens: int | None = None  # text tokens for the captions; None: as RetrievalConfig.tokens
    scoring: str = "mean"  # one of SCORING_MODES
    chat: bool = False  # also ask the chat model the direction question both ways
    llava: str | None = None  # chat: LLaVA directory or hub id (needed when --model is a directory)
    temporal: str = "stan"  # chat: how frames reach the LLM
    max_new_tokens: int = 16  # chat: answer length limit
    cache_dir: Path | None = field(default_factory=default_cache_dir)  # video-feature cache; None: off
    batch_size: int = 8  # videos per forward pass
    workers: int = 2  # threads decoding ahead of the model (0: decode in turn)
    device: str | None = None  # torch device; None: accelerate's choice

    @property
    def dataset(self) -> str:
        """The feature-cache name of this input."""
        return f"reverse-{Path(self.data).stem}"


@dataclass
class MCQConfig:
    data: Path  # JSONL of {id, video, question, options, answer (index or option text), kind}
    out: Path  # folder for mcq.json, mcq.md, mcq.png and mcq_predictions.jsonl
    model: str | None = None  # chat preset (None with llava + stan: stanchat's default preset otherwise)
    llava: str | None = None  # overrides the preset's LLaVA (hub id or directory)
    stan: str | None = None  # overrides the preset's STAN directory
    data_root: Path | None = None  # folder the JSONL's video paths are relative to; None: the JSONL's folder
    frames: int = 16  # frames per video
    temporal: str = "stan"  # how frames reach the LLM: stan | mean | concat | segments
    batch_size: int = 8  # answers scored per forward pass
    dtype: str | None = None  # float32 | float16 | bfloat16; None: stanchat.load's choice
    device: str | None = None  # torch device; None: CUDA when present, else CPU


def check_choice(option: str, value: str, valid: tuple[str, ...]) -> str:
    """`value` if it is one of `valid`, else one line naming the valid ones (the CLI's choices
    already catch this; it guards the Python API)."""
    if value not in valid:
        raise StanchatError(f"unknown {option} {value!r}; choose one of {', '.join(valid)}")
    return value
