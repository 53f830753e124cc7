"""lmms-eval hooks of a task written by `training.synthworld.mcq` (copied next to its yaml files).

The questions file (JSONL: id, video, question, options, answer, kind) sits beside this file; video
paths in it are relative to this folder. The multiple-choice task scores `doc_to_choice` by
likelihood with `doc_to_text` as the context; the `_gen` task asks the same questions and counts an
answer right when it is the right option's text.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def doc_to_visual(doc):
    return [str(HERE / doc["video"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def doc_to_choice(doc):
    return list(doc["options"])


def doc_to_target(doc):
    return int(doc["answer"])


def doc_to_answer(doc):
    """The right option's text (the generation task's target)."""
    return doc["options"][int(doc["answer"])]


def process_generation(doc, results):
    """exact_match: the generated answer is the right option's text (case and outer spaces aside)."""
    answer = results[0].strip().lower()
    return {"exact_match": float(answer == doc["options"][int(doc["answer"])].lower())}
