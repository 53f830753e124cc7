"""`StanchatLMM`: lmms-eval's `--model stanchat`, in process on a `VideoChat` and its batched engine.

    lmms-eval --model stanchat --model_args model=tiny,frames=8 --tasks TASK --include_path DIR
    accelerate launch -m lmms_eval --model stanchat --model_args model=llava-1.5-7b,frames=16 --tasks videomme

`--model_args` are the command line's words: `model=` (a preset) or `llava=` / `stan=`, `frames=`,
`temporal=`, `dtype=`, `load_4bit=` / `load_8bit=`, `batch_size=` (else lmms-eval's `--batch_size`),
`device=`. A request's visual is one video path (lmms-eval's `doc_to_visual`); its context is the
question (any `<image>` placeholder in it is dropped: stanchat places the video itself).

- `generate_until`: the question's job (`engine.prompt.make_job`: the prompt `stanchat ask` builds)
  with the task's `max_new_tokens`, `temperature`, `top_p` and `until` stop strings, answered
  `batch_size` at a time by `chat.engine.generate_many`, so greedy answers equal `stanchat ask --batch`.
- `loglikelihood`: `stanchat.choice.score_answers` (the library's likelihood, what `stanchat eval
  mcq` uses). It returns the negative summed log-probability: lmms-eval 0.7's multiple-choice scoring
  takes the *smallest* value as the choice (its own models return losses), so the option stanchat
  finds likeliest is the one lmms-eval picks. Each (value, is_greedy) pair is handed over inside a
  `GenerationResult`: lmms-eval 0.7.3 turns any other output that is not text into its `str`
  (`api.instance.unwrap_generation_output`), and its multiple-choice scoring then fails on the strings.

Under `accelerate launch` each process loads the model on its own device; lmms-eval hands each rank
its share of the documents (`rank`, `world_size` from accelerate) and gathers the results.
"""

from __future__ import annotations

import logging
from typing import Any

from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from tqdm.auto import tqdm

from stanchat.errors import StanchatError
from stanchat.options import DEFAULTS, VideoOptions

logger = logging.getLogger(__name__)

MODEL_ARGS = ("model", "llava", "stan", "frames", "temporal", "dtype", "load_4bit", "load_8bit", "batch_size", "device")


class StanchatLMM(lmms):
    is_simple = True  # doc_to_visual + doc_to_text: lmms-eval runs multiple-choice tasks only for these

    def __init__(self, model: str | None = None, llava: str | None = None, stan: str | None = None,
                 frames: int = DEFAULTS.frames, temporal: str = DEFAULTS.temporal, dtype: str | None = None,
                 load_4bit: bool = False, load_8bit: bool = False, batch_size: int | str = DEFAULTS.batch_size,
                 device: str | None = None, **unknown: Any):
        super().__init__()
        if unknown:
            raise StanchatError(f"unknown --model_args {', '.join(sorted(unknown))}; stanchat takes {', '.join(MODEL_ARGS)}")
        import stanchat
        import torch
        from accelerate import Accelerator

        # without CUDA, accelerate forms a group of CPU processes (gloo) only when told cpu=True
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        if self.accelerator.num_processes > 1:  # one model per process, on that process's device
            device = str(self.accelerator.device)
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.options = VideoOptions(frames=int(frames), temporal=str(temporal))
        self.batch_size_per_gpu = _batch_size(batch_size)
        self.chat = stanchat.load(model, llava=llava, stan=stan, device=device, dtype=dtype,
                                  load_in_4bit=bool(load_4bit), load_in_8bit=bool(load_8bit))

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "StanchatLMM":
        """As lmms-eval's, but a `batch_size=` or `device=` in `--model_args` wins over the command line's
        (lmms-eval always passes its `--batch_size`, default 1)."""
        from lmms_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string)
        for key in ("batch_size", "device"):
            value = (additional_config or {}).get(key)
            if key not in args and value is not None:
                args[key] = value
        return cls(**args)

    @property
    def device(self):
        return self.chat.input_device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def generate_until(self, requests: list[Instance]) -> list[str]:
        from stanchat.batch import question_job

        answers: list[str] = []
        jobs: list = []
        for request in tqdm(requests, disable=self.rank != 0, desc="stanchat answering"):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            video, question = self._video(doc_to_visual, doc_id, task, split), self._question(context)
            job, _ = question_job(self.chat, video, question, self.options, sampling_of(gen_kwargs))
            jobs.append(job)
            if len(jobs) == self.batch_size_per_gpu:
                answers += [result.text for result in self.chat.engine.generate_many(jobs)]
                jobs = []
        return answers + ([result.text for result in self.chat.engine.generate_many(jobs)] if jobs else [])

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        from stanchat.choice import score_answers

        def asked(request: Instance) -> dict:
            context, continuation, doc_to_visual, doc_id, task, split = request.args
            if callable(continuation):  # output_type loglikelihood hands doc_to_target itself
                continuation = continuation(self.task_dict[task][split][doc_id])
            return {"video": self._video(doc_to_visual, doc_id, task, split), "question": self._question(context),
                    "answer": str(continuation)}

        chosen = tqdm(requests, disable=self.rank != 0, desc="stanchat scoring")
        scores = score_answers(self.chat, map(asked, chosen), self.batch_size_per_gpu, vars(self.options))
        return [GenerationResult(text=(-scored.logprob, scored.greedy)) for scored in scores]  # see the docstring

    def generate_until_multi_round(self, requests) -> list[str]:
        raise StanchatError("stanchat answers one question per video in lmms-eval; multi-round tasks are not supported")

    def _video(self, doc_to_visual, doc_id: int, task: str, split: str) -> str:
        """The request's one video path."""
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if callable(doc_to_visual) else doc_to_visual
        visuals = [v for v in (visuals if isinstance(visuals, (list, tuple)) else [visuals]) if v is not None]
        if len(visuals) != 1 or not isinstance(visuals[0], str):
            kinds = ", ".join(type(v).__name__ for v in visuals) or "nothing"
            raise StanchatError(f"task {task} gives {kinds} as a document's visuals; stanchat takes one video path")
        return visuals[0]

    def _question(self, context: str) -> str:
        """The context without lmms-eval's `<image>` placeholders (stanchat places the video itself)."""
        for token in {"<image>", self.chat.processor.image_token}:
            context = context.replace(token, "")
        return context.strip()


def sampling_of(gen_kwargs: dict) -> Any:
    """lmms-eval's generation kwargs as a checked `Sampling` (greedy unless `do_sample`)."""
    from stanchat.session import sampling_of as library_sampling

    if int(gen_kwargs.get("num_beams") or 1) > 1:
        raise StanchatError("stanchat decodes greedily or by sampling; set the task's num_beams to 1")
    until = gen_kwargs.get("until") or []
    until = [until] if isinstance(until, str) else until
    sampled = bool(gen_kwargs.get("do_sample")) and float(gen_kwargs.get("temperature") or 0) > 0
    return library_sampling(max_new_tokens=int(gen_kwargs.get("max_new_tokens") or DEFAULTS.max_new_tokens),
                            temperature=float(gen_kwargs["temperature"]) if sampled else 0.0,
                            top_p=float(gen_kwargs.get("top_p") or DEFAULTS.top_p) if sampled else DEFAULTS.top_p,
                            stop=[s for s in until if s])


def _batch_size(value: int | str) -> int:
    if isinstance(value, str) and value.startswith("auto"):  # lmms-eval's auto: stanchat's default
        return DEFAULTS.batch_size
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1:
        raise StanchatError(f"batch_size must be a whole number of at least 1, got {value!r}", param="batch_size")
    return size
