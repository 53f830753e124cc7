"""Load a STAN-grafted LLaVA and ask it about videos.

`load(...)` returns a `VideoChat`: given a preset name (and overrides) it resolves them into one
`stanchat.pretrained.ModelSpec` and fetches its missing parts itself; given a spec a command already
resolved and fetched, it only reads its paths. The `VideoChat` owns the two halves every front end uses:
- video -> features: `chat.encode(video, VideoOptions)` samples and decodes the frames (in the
  decode worker, at the model's input size), runs the tower, STAN and projector, and keeps the
  result in one bounded cache keyed by the video's content and the options (`stanchat.encoding`);
  under `select="question"` it takes the question too, scores candidate frames against it and
  encodes the frames it is about (`stanchat.selection`);
- answering: `chat.engine` (`stanchat.engine`), which every answer goes through, batched.
`chat.ask(video, question)` answers once, `chat.stream(...)` yields the answer as it is generated,
`chat.session(video)` keeps the encoded video and the history for a multi-turn conversation
(`stanchat.session`), `chat.ask_many(requests)` answers many in batches (`stanchat.batch`).

This module is the one place that deals with devices, dtypes, quantisation (bitsandbytes) and
`device_map` (accelerate). The graft (`stanchat.graft`) and the session code take tensors where
this module put them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import replace
from typing import Any, Iterable, Iterator

import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

from stanchat.batch import ask_many
from stanchat.encoding import EncodedVideo, VideoCache, cache_key, clip_digest, file_digest
from stanchat.engine import Engine, create_engine
from stanchat.engine.prompt import plan
from stanchat.errors import StanchatError, WeightsError
from stanchat.fetch import ensure
from stanchat.graft import Graft, load_graft_model
from stanchat.hub import resolve_model_dir
from stanchat.options import DEFAULTS, VIDEO_OPTIONS, VideoOptions, check_frames
from stanchat.pretrained import ModelSpec, to_spec
from stanchat.relevance import FrameRelevance
from stanchat.selection import Candidates, choose, decode_candidates, no_question, no_text_tower, subclip
from stanchat.session import Answer, Session, Stream
from stanchat.video import Preprocessor, SampledFrames, load_video
from stanchat.video.load import check_length, check_pixels
from stanchat.videoclip import VideoCLIP

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# the LLaVA families the graft accepts: config model_type -> transformers class
LLAVA_CLASSES = {"llava": LlavaForConditionalGeneration, "llava_next": LlavaNextForConditionalGeneration}
ORIGINAL_V1_ARCHITECTURE = "LlavaLlamaForCausalLM"  # LLaVA's own repo layout: `stanchat convert llava` first
# kept in float under 4/8-bit: the tower and projector feed the graft, lm_head is quantisation-sensitive
QUANT_SKIP_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


class VideoChat:
    """A STAN-grafted LLaVA ready to answer questions about videos.

    Attributes: `llava` (transformers `LlavaForConditionalGeneration`), `processor` (its
    `LlavaProcessor`: tokenizer, image processor, chat template), `videoclip` (the `VideoCLIP` whose
    STAN is grafted; its text tower scores text against frames, e.g. Mug weights), `graft`, `name`,
    `relevance` (a `FrameRelevance` giving the question's Mug weight on each frame, or None when no
    text tokenizer came with the STAN weights), `preset` (the preset it was loaded from, or None),
    `cache` (the encoded videos kept), `engine` (what generates every answer; `use_engine` swaps it).
    """

    def __init__(self, llava: LlavaForConditionalGeneration, processor: Any, videoclip: VideoCLIP, name: str,
                 relevance: FrameRelevance | None = None, preset: str | None = None,
                 cache_size: int = DEFAULTS.video_cache):
        self.llava = llava
        self.processor = processor
        self.videoclip = videoclip
        self.graft = Graft(llava, videoclip.stan)
        self.name = name
        self.preset = preset
        self.relevance = relevance
        self.cache = VideoCache(cache_size)
        self.candidate_cache = VideoCache(cache_size)  # select=question: candidate frames and their features
        self._engine: Engine | None = None
        # the LLaVA processor's own resize, crop, mean and std, applied to every frame
        self.preprocessor = Preprocessor.from_image_processor(processor.image_processor)
        if processor.image_token_id != llava.config.image_token_id:
            raise WeightsError(f"the processor's {processor.image_token} is token {processor.image_token_id} but the "
                               f"model expects {llava.config.image_token_id}; the processor and model do not match")

    @property
    def engine(self) -> Engine:
        """The engine every answer goes through (the transformers engine unless `use_engine` set another)."""
        if self._engine is None:
            self._engine = create_engine("transformers", self.llava, self.processor)
        return self._engine

    def use_engine(self, engine: Engine | None) -> None:
        """Answer through `engine` from now on (e.g. the API's configured one; None: the default
        transformers engine again, made on first use); the old one is closed."""
        if self._engine is not None and self._engine is not engine:
            self._engine.close()
        self._engine = engine

    @property
    def image_token_id(self) -> int:
        return self.llava.config.image_token_id

    @property
    def context_length(self) -> int:
        """The LLM's context in tokens (`max_position_embeddings`)."""
        return self.llava.config.text_config.max_position_embeddings

    @property
    def vision_device(self) -> torch.device:
        return self.graft.vision.embeddings.patch_embedding.weight.device

    @property
    def vision_dtype(self) -> torch.dtype:
        return self.graft.vision.embeddings.patch_embedding.weight.dtype

    @property
    def input_device(self) -> torch.device:
        """Where the LLM wants its inputs: the device of the token embedding."""
        return self.llava.get_input_embeddings().weight.device

    def preprocess(self, clip: SampledFrames) -> torch.Tensor:
        """Frames as the LLaVA processor would prepare an image (its size, crop, mean, std).
        (T, H0, W0, 3) uint8 -> (1, T, 3, H, W) on the tower's device and dtype."""
        return self.preprocessor(clip).to(self.vision_device, self.vision_dtype)

    def encode(self, video: str | os.PathLike | SampledFrames, options: VideoOptions = VideoOptions(), *,
               question: str | None = None, digest: str | None = None, max_seconds: float | None = None,
               max_pixels: int | None = None, cancel: threading.Event | None = None) -> EncodedVideo:
        """The video's tokens for the LLM: `options` say which frames are sampled (a decoded
        `SampledFrames` is used as it is: its frames were sampled already) and how they are encoded.
        Cached by content (`digest`: the file's sha256 when the caller knows it) and options; a
        repeat costs nothing and says so (`cache_hit`, zero seconds). `max_seconds` refuses a longer
        video (or window), `max_pixels` larger frames, before any frame is decoded. Frame counts are
        checked before decoding. Setting `cancel` calls the decode off (`load_video`): Cancelled is
        raised and nothing is cached. Under `options.select == "question"` the `question` chooses the
        frames (`stanchat.selection`; a decoded clip is then the candidates)."""
        limits = {"max_seconds": max_seconds, "max_pixels": max_pixels, "cancel": cancel}
        if options.select == "question":
            return self._encode_selected(video, options, question, digest, limits)
        if isinstance(video, SampledFrames):
            options = replace(options, frames=len(video.timestamps))
        self.check_frames(options)
        digest = clip_digest(video) if isinstance(video, SampledFrames) else digest or file_digest(video)
        pre = self.preprocessor  # how frames are fitted and normalised for the tower
        key = cache_key(digest, options, (pre.fit, pre.mean, pre.std))
        encoded, hit = self.cache.get(key, lambda: self._encode(video, options, limits))
        if not hit:
            return encoded
        if not isinstance(video, SampledFrames):  # the limits hold for cached videos too
            self._check_limits(str(video), encoded.clip, options, max_seconds, max_pixels)
        return replace(encoded, cache_hit=True, decode_seconds=0.0, vision_seconds=0.0)

    @staticmethod
    def _check_limits(path: str, clip: SampledFrames, options: VideoOptions, max_seconds: float | None,
                      max_pixels: int | None) -> None:
        if max_seconds is not None:
            check_length(path, clip.duration, options.start, options.end, max_seconds)
        if max_pixels is not None:
            check_pixels(path, (clip.width, clip.height), max_pixels)

    def check_frames(self, options: VideoOptions) -> None:
        """Refuse, before decoding, more frames than STAN's temporal embedding covers."""
        check_frames(options.frames, self.graft.max_frames)

    def check_prompt(self, options: VideoOptions, question: str, history: list[tuple[str, str]] = (),
                     system: str | None = None) -> None:
        """Refuse, before anything is decoded, a question whose prompt cannot fit the context with
        these options' video tokens (frames past STAN's reach too). Strategy fps may sample fewer
        frames than asked: its prompt is checked once the frames are known."""
        self.check_frames(options)
        if options.select == "question" and self.relevance is None:
            raise no_text_tower()
        if options.strategy != "fps":
            spans = [(0.0, 0.0)] * options.segments if options.temporal == "segments" else None  # counted alike
            plan(self.processor, self.context_length, self.token_count(options), options.frames, options.temporal,
                 list(history), question, system, spans)

    def token_count(self, options: VideoOptions) -> int:
        """N: the video tokens `options` give (at their asked frame count)."""
        side = self.preprocessor.crop_size
        return self.graft.token_count(options.temporal, options.frames, side, side, options.segments)

    def _encode(self, video: str | os.PathLike | SampledFrames, options: VideoOptions, limits: dict) -> EncodedVideo:
        """`limits`: load_video's max_seconds, max_pixels and cancel."""
        start = time.perf_counter()
        clip = video if isinstance(video, SampledFrames) else load_video(
            video, frames=options.frames, strategy=options.strategy, fps=options.fps, start=options.start,
            end=options.end, generator=options.seed, fit=self.preprocessor.fit, **limits)
        pixel_values = self.preprocess(clip)  # (1, T, 3, H, W)
        check_frames(pixel_values.shape[1], self.graft.max_frames)
        decoded = time.perf_counter()
        features = self.graft.features(pixel_values, options.temporal, options.segments)  # (1, N, E)
        if features.device.type == "cuda":  # CUDA runs asynchronously: wait, so the time is the work's
            torch.cuda.synchronize(features.device)
        return EncodedVideo(features=features, clip=clip, options=options, decode_seconds=decoded - start,
                            vision_seconds=time.perf_counter() - decoded)

    def candidates(self, video: str | os.PathLike | SampledFrames, options: VideoOptions, *, digest: str | None = None,
                   limits: dict | None = None) -> tuple[Candidates, bool, str]:
        """The video's candidate frames and their scoring features (cached by content, candidate count
        and window), whether they came from the cache, and the video's digest."""
        if self.relevance is None:
            raise no_text_tower()
        source = clip_digest(video) if isinstance(video, SampledFrames) else digest or file_digest(video)
        key = (source, "candidates", options.candidates, options.start, options.end)

        def make() -> Candidates:
            started = time.perf_counter()
            size = max(self.preprocessor.size, self.relevance.preprocessor.size)
            clip = decode_candidates(video, options, size, limits or {})
            decoded = time.perf_counter()
            features = self.relevance.candidate_features(clip)  # (C, P)
            return Candidates(clip, features, decoded - started, time.perf_counter() - decoded)

        candidates, hit = self.candidate_cache.get(key, make)
        if hit and limits and not isinstance(video, SampledFrames):  # the limits hold for cached videos too
            self._check_limits(str(video), candidates.clip, options, limits["max_seconds"], limits["max_pixels"])
        return candidates, hit, source

    def _encode_selected(self, video: str | os.PathLike | SampledFrames, options: VideoOptions, question: str | None,
                         digest: str | None, limits: dict) -> EncodedVideo:
        """The frames `question` is about among the candidates, encoded (cached by the chosen frames)."""
        if question is None:
            raise no_question()
        self.check_frames(options)
        candidates, candidates_hit, source = self.candidates(video, options, digest=digest, limits=limits)
        started = time.perf_counter()
        weights = self.relevance.weights(question, candidates.features).tolist()  # (C,) sum 1
        chosen = choose(weights, options.frames)
        selected = time.perf_counter() - started
        clip = subclip(candidates.clip, chosen)
        encoded, hit = self.cache.get((source, options, tuple(chosen)), lambda: self._encode(clip, options, {}))
        decode = (0.0 if candidates_hit else candidates.decode_seconds) + (0.0 if hit else encoded.decode_seconds)
        return replace(encoded, cache_hit=hit, decode_seconds=decode, vision_seconds=0.0 if hit else encoded.vision_seconds,
                       weights=tuple(weights[i] for i in chosen),
                       select_seconds=selected + (0.0 if candidates_hit else candidates.score_seconds))

    def session(self, video: str | os.PathLike | SampledFrames | EncodedVideo, frames: int = DEFAULTS.frames,
                temporal: str = DEFAULTS.temporal, history: list[tuple[str, str]] | None = None,
                max_seconds: float | None = None, max_pixels: int | None = None, **options: Any) -> Session:
        """A multi-turn conversation about `video`, encoded now (optionally continuing `history`).
        `options`: the other `VideoOptions` fields (strategy, fps, start, end, seed, segments, select,
        candidates). Under select="question" the candidates are decoded and scored now, and each
        question selects its frames again (encoding again only when the selection changes)."""
        if isinstance(video, EncodedVideo):
            return Session(self, video, history)
        chosen = VideoOptions(frames=frames, temporal=temporal, **options)
        limits = {"max_seconds": max_seconds, "max_pixels": max_pixels}  # refused before decoding
        if chosen.select != "question":
            return Session(self, self.encode(video, chosen, **limits), history)
        candidates, _, digest = self.candidates(video, chosen, limits={**limits, "cancel": None})  # a bad video fails here

        def select(question: str) -> EncodedVideo:
            return self.encode(video, chosen, question=question, digest=digest, **limits)

        return Session(self, None, history, select=(chosen, candidates, select))

    def ask(self, video: str | os.PathLike | SampledFrames, question: str, frames: int = DEFAULTS.frames,
            temporal: str = DEFAULTS.temporal, **keywords: Any) -> Answer:
        """Answer one question about `video`. `keywords`: the other `VideoOptions` fields (strategy,
        fps, start, end, seed) and the answer's (`max_new_tokens`, `temperature`, `top_p`, `stop`;
        see `Session.ask`). The prompt is checked against the context before the video is decoded."""
        return self._one_question(video, question, frames, temporal, keywords).ask(question, **keywords)

    def stream(self, video: str | os.PathLike | SampledFrames, question: str, frames: int = DEFAULTS.frames,
               temporal: str = DEFAULTS.temporal, **keywords: Any) -> Stream:
        """Like `ask`, streaming: iterate the result for text pieces, then read its `.answer`."""
        return self._one_question(video, question, frames, temporal, keywords).stream(question, **keywords)

    def _one_question(self, video, question: str, frames: int, temporal: str, keywords: dict) -> Session:
        """The session for one question; moves the video options out of `keywords`."""
        given = {name: keywords.pop(name) for name in VIDEO_OPTIONS if name in keywords}
        options = VideoOptions(frames=frames, temporal=temporal, **given)
        if isinstance(video, SampledFrames) and options.select != "question":
            options = replace(options, frames=len(video.timestamps))
        self.check_prompt(options, question)
        return self.session(video, **options.__dict__)

    def ask_many(self, requests: Iterable[dict], batch_size: int = DEFAULTS.batch_size,
                 defaults: dict[str, Any] | None = None) -> Iterator[dict]:
        """Answer many requests (dicts: video, question, optional id and any option of
        `stanchat.batch.FIELDS`; `defaults` fills the options a request leaves out) in batches;
        yields one record per request, in order, as each batch finishes (see `stanchat.batch`)."""
        return ask_many(self, requests, batch_size, defaults)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to run on: the given one (checked), else CUDA when present, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise StanchatError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise StanchatError(f"device {device!r} asked for but no CUDA GPU is available; use --device cpu")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The weight dtype: the given one (a name in DTYPES or a torch dtype), else float16 on a GPU
    and float32 on the CPU (where half precision is slow or unsupported)."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise StanchatError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def quantization_config(load_in_4bit: bool, load_in_8bit: bool, dtype: torch.dtype):
    """A bitsandbytes config quantising the LLM's linear layers (tower, projector and lm_head stay
    in `dtype`), or None for full precision."""
    if load_in_4bit and load_in_8bit:
        raise StanchatError("choose one of 4-bit and 8-bit loading, not both")
    if not (load_in_4bit or load_in_8bit):
        return None
    try:
        import bitsandbytes  # noqa: F401  (transformers needs it at load time)
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise StanchatError("4/8-bit loading needs bitsandbytes: pip install 'stanchat[quant]'") from err
    if load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                                  llm_int8_skip_modules=QUANT_SKIP_MODULES)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=QUANT_SKIP_MODULES)


def load_llava(name_or_path: str, device: torch.device, dtype: torch.dtype, quantization=None,
               device_map: str | dict | None = None) -> tuple[LlavaForConditionalGeneration, Any]:
    """A transformers LLaVA and its processor from a directory or hub id, placed and quantised."""
    directory = resolve_model_dir(name_or_path, "LLaVA model")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise WeightsError(f"{directory} has no config.json; pass a LLaVA directory saved by transformers")
    config = json.loads(config_file.read_text())
    if ORIGINAL_V1_ARCHITECTURE in (config.get("architectures") or []):
        raise WeightsError(f"{directory} is an original-layout LLaVA v1 ({ORIGINAL_V1_ARCHITECTURE}); convert it once "
                           f"with `stanchat convert llava {name_or_path} --out DIR` and pass --llava DIR")
    model_type = config.get("model_type")
    if model_type not in LLAVA_CLASSES:
        raise WeightsError(f"{directory} holds a {model_type!r} model, not a LLaVA (model_type one of "
                           f"{', '.join(map(repr, LLAVA_CLASSES))})")
    processor = AutoProcessor.from_pretrained(directory)
    if not (hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")) or not processor.chat_template:
        raise WeightsError(f"{directory} has no LLaVA processor with a chat template; save one with "
                           f"LlavaProcessor.save_pretrained next to the model")
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map=device_map or {"": str(device)})
    elif device_map is not None:
        kwargs["device_map"] = device_map
    model = LLAVA_CLASSES[model_type].from_pretrained(directory, **kwargs)
    if quantization is None and device_map is None:
        model.to(device)
    return model.eval(), processor


def load(model: str | ModelSpec | None = None, *, llava: str | None = None, stan: str | os.PathLike | None = None,
         device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
         load_in_4bit: bool = False, load_in_8bit: bool = False,
         device_map: str | dict | None = None, revision: str | None = None) -> VideoChat:
    """Load a video chat model.

    model: a preset name from `stanchat.pretrained` (default "llava-1.5-7b"); `llava` (hub id or
    directory) and `stan` (a saved VideoCLIP directory) override its parts. Or a `ModelSpec` that
    `stanchat.pretrained.resolve` already made (then without `llava`, `stan` or `revision`).
    device: "cpu", "cuda", "cuda:N" (default: CUDA if present). dtype: "float32" | "float16" |
    "bfloat16" (default float16 on GPU, float32 on CPU). load_in_4bit / load_in_8bit: quantise the
    LLM with bitsandbytes.
    device_map: passed to transformers/accelerate (e.g. "auto") instead of `device` for the LLaVA.
    revision: the hub revision of the preset's released STAN file (default main), when it is fetched.
    A preset's parts that are not on disk yet are fetched and converted once (`stanchat.fetch`);
    a spec with none missing is loaded as it is, not resolved or checked again.
    """
    spec = to_spec(model, llava, stan, revision)
    if spec.missing:
        spec = ensure(spec)
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    quantization = quantization_config(load_in_4bit, load_in_8bit, resolved_dtype)
    llava_model, processor = load_llava(spec.llava, resolved_device, resolved_dtype, quantization, device_map)
    videoclip = load_graft_model(spec.stan, resolved_dtype)
    vision_device = llava_model.model.vision_tower.embeddings.patch_embedding.weight.device
    videoclip.to(vision_device).eval()  # the grafted STAN runs beside LLaVA's tower
    relevance = FrameRelevance.from_directory(videoclip, spec.stan)  # None without a text tokenizer
    return VideoChat(llava_model, processor, videoclip, spec.name, relevance, preset=spec.preset)
