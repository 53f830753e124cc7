"""A deterministic synthetic video world whose right caption depends on time.

Coloured shapes move left/right/up/down, grow or shrink, or appear one after the other; a
single frame cannot tell a left-moving shape from a right-moving one, so only temporal
modelling can match captions, contrast captions ("... moves right" for a clip moving left),
and QA ("Which way does the red circle move?"). Still images show a motion as a fading trail.

    from training.synthworld import WorldConfig, sample_specs, render_clip, caption, write_dataset
    specs = sample_specs(100, seed=0)                       # same specs on every machine
    frames = render_clip(specs[0])                          # uint8 (T, H, W, 3)
    write_dataset("/tmp/msrvtt", "msrvtt", n=100, seed=0)   # real mp4s + MSRVTT_JSFUSION_test.csv

Command line: `python -m training.synthworld --out DIR --format msrvtt --n 100 --seed 0`
(`--format all` writes every format, one folder each).
"""

from training.synthworld.formats import WRITERS, SynthDataset, write_dataset
from training.synthworld.render import render_clip, render_still, write_image, write_video
from training.synthworld.shards import ShardSet, write_shards
from training.synthworld.world import (
    COLOURS,
    DIRECTIONS,
    MOTION_CLASSES,
    MOTIONS,
    NOISE_WORDS,
    OPPOSITE,
    SHAPES,
    TEMPLATES,
    Actor,
    ClipSpec,
    Event,
    WorldConfig,
    all_combinations,
    caption,
    contrast_caption,
    event_sentence,
    flipped,
    holdout_combinations,
    motion_class,
    paragraph,
    qa_pairs,
    sample_specs,
)

__all__ = [
    "COLOURS", "DIRECTIONS", "MOTIONS", "MOTION_CLASSES", "NOISE_WORDS", "OPPOSITE", "SHAPES", "TEMPLATES", "WRITERS",
    "Actor", "ClipSpec", "Event", "ShardSet", "SynthDataset", "WorldConfig",
    "all_combinations", "caption", "contrast_caption", "event_sentence", "flipped", "holdout_combinations",
    "motion_class", "paragraph", "qa_pairs", "render_clip", "render_still", "sample_specs", "write_dataset", "write_shards",
    "write_image", "write_video",
]
