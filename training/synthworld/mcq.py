"""A TempCompass-style temporal multiple-choice set: `stanchat eval mcq` data and a local lmms-eval task.

Every clip is written twice, as sampled and with its motion reversed (`flipped`: the opposite
direction, grow <-> shrink, the appearance order reversed), and asked about the thing only time
shows: which way a shape moves (direction: the two ways along its axis), whether it grows or shrinks
(size), which shape appears first (order: the shapes that appear). The options are listed in a fixed
order that does not depend on the answer, so a model blind to frame order gives a clip and its
reversal the same choice and gets one of each such pair wrong: about 50% on direction and size.

`root` gets:
- `videos/*.mp4` and `questions.jsonl` (id, video, question, options, answer index, kind): the input
  of `stanchat eval mcq --data root/questions.jsonl`;
- `<task>.yaml` (lmms-eval, `output_type: multiple_choice`: each option scored by likelihood, the
  question as context), `<task>_gen.yaml` (the same questions as `generate_until`, exact match on the
  right option's text) and `utils.py`: run with `--include_path root --tasks <task>`. The yaml names
  `questions.jsonl` by absolute path (lmms-eval's json loader reads it from the working directory),
  so write the set where it will be used.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from stanchat.errors import StanchatError
from training.synthworld.render import render_clip, write_video
from training.synthworld.world import DIRECTIONS, OPPOSITE, ClipSpec, WorldConfig, flipped, qa_pairs, sample_specs

TASK = "stanchat_temporal_mcq"  # the lmms-eval task name; its generation twin is TASK + "_gen"
_AXES = {"left": ("left", "right"), "right": ("left", "right"), "up": ("up", "down"), "down": ("up", "down")}
_FIRST = "Which shape appears first?"


@dataclass
class MCQSet:
    """What `write_mcq` wrote."""

    root: Path
    questions: Path  # questions.jsonl
    tasks: tuple[str, str]  # the lmms-eval task names: multiple choice by likelihood, generation
    items: list[dict] = field(default_factory=list)  # the questions, as written


def write_mcq(root: str | Path, n: int = 50, seed: int = 0, config: WorldConfig = WorldConfig(),
              exclude: frozenset = frozenset(), only: frozenset | None = None, task: str = TASK) -> MCQSet:
    """`n` sampled clips and their reversals under `root`, with their questions and lmms-eval tasks."""
    if config.segments != 1:
        raise StanchatError("the multiple-choice set asks about one-event clips; use --segments 1")
    root = Path(root).expanduser().resolve()
    (root / "videos").mkdir(parents=True, exist_ok=True)
    items = []
    for spec in sample_specs(n, seed, config, prefix="mcq", exclude=exclude, only=only):
        for played, name in ((spec, spec.clip_id), (flipped(spec), f"{spec.clip_id}-reversed")):
            asked = questions(played)
            if asked:
                write_video(root / "videos" / f"{name}.mp4", render_clip(played, config), config.fps)
            items += [{"id": f"{name}/{kind}", "video": f"videos/{name}.mp4", "question": q, "options": options,
                       "answer": options.index(answer), "kind": kind} for q, options, answer, kind in asked]
    if not items:
        raise StanchatError("no clip holds a direction, size or order event; allow those motions (--motions)")
    path = root / "questions.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    shutil.copyfile(Path(__file__).with_name("lmms_task") / "utils.py", root / "utils.py")
    (root / f"{task}.yaml").write_text(task_yaml(task, path, generate=False))
    (root / f"{task}_gen.yaml").write_text(task_yaml(f"{task}_gen", path, generate=True))
    return MCQSet(root, path, (task, f"{task}_gen"), items)


def questions(spec: ClipSpec) -> list[tuple[str, list[str], str, str]]:
    """(question, options, answer, kind) about the clip's temporal events."""
    asked = []
    order = {e.actors[0].name: e for e in spec.captioned if e.motion == "appear"}
    for question, answer in qa_pairs(spec):
        if answer in DIRECTIONS:
            asked.append((question, list(_AXES[answer]), answer, "direction"))
        elif answer in OPPOSITE:
            asked.append((question, ["grow", "shrink"], answer, "size"))
        elif question == _FIRST and answer in order:
            asked.append((question, sorted(a.name for a in order[answer].actors), answer, "order"))
    return asked


def task_yaml(task: str, questions: Path, generate: bool) -> str:
    """The lmms-eval task reading `questions`: by likelihood over the options, or generated answers."""
    head = (f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(questions))}\n"
            "test_split: test\ndoc_to_visual: !function utils.doc_to_visual\ndoc_to_text: !function utils.doc_to_text\n")
    if generate:
        return head + ("output_type: generate_until\ngeneration_kwargs:\n  max_new_tokens: 8\n  temperature: 0\n"
                       "  do_sample: false\n  until: [\"\\n\"]\ndoc_to_target: !function utils.doc_to_answer\n"
                       "process_results: !function utils.process_generation\n"
                       "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n")
    return head + ("output_type: multiple_choice\ndoc_to_choice: !function utils.doc_to_choice\n"
                   "doc_to_target: !function utils.doc_to_target\n"
                   "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
