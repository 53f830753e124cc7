"""What happens in a synthetic clip, and the words that describe it.

A clip is a few consecutive segments; each segment holds one `Event`: a coloured shape that
moves left/right/up/down, grows or shrinks, or two or three shapes that appear one after the
other. Any single frame is ambiguous (a shape moving left and one moving right pass through
the same positions); only the order of the frames tells which caption is right.

Everything is a pure function of a seed: `sample_specs(n, seed)` returns the same specs on
every machine, and the geometry of a clip is drawn from `ClipSpec.seed` at render time.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from stanchat.errors import StanchatError

# name -> RGB; hues far apart so they survive yuv420p chroma subsampling at 64 px
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 90, 230), "yellow": (235, 210, 40),
    "purple": (150, 60, 200), "orange": (240, 140, 30), "cyan": (40, 200, 210), "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle", "diamond")
DIRECTIONS = ("left", "right", "up", "down")
MOTIONS = (*DIRECTIONS, "grow", "shrink", "appear")
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "grow": "shrink", "shrink": "grow"}
# recognition class of each motion (Kinetics-style words; UCF/HMDB raw names are derived from these)
MOTION_CLASSES = {
    "left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
    "grow": "growing", "shrink": "shrinking", "appear": "appearing in turn",
}
# words stock-footage captions carry that no frame shows (imitates partial misalignment)
NOISE_WORDS = ("stock", "footage", "hd", "4k", "beautiful", "background", "slow", "motion", "abstract",
               "closeup", "animation", "concept", "video", "graphic", "loop", "cinematic")
_DIRECTION_WORDS = {"left": "to the left", "right": "to the right", "up": "upwards", "down": "downwards"}
_SIZE_WORDS = {"grow": ("grows", "is getting bigger", "growing"), "shrink": ("shrinks", "is getting smaller", "shrinking")}
TEMPLATES = 3  # paraphrase templates per event; `caption(spec, template=k)` picks one


@dataclass(frozen=True)
class Actor:
    """A coloured shape."""

    colour: str  # a key of COLOURS
    shape: str  # one of SHAPES

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Event:
    """What happens during one segment of a clip."""

    motion: str  # one of MOTIONS
    actors: tuple[Actor, ...]  # one actor, or 2-3 for "appear" (in order of appearance)
    captioned: bool = True  # False: a distractor segment the caption does not mention

    def combinations(self) -> set[tuple[str, str, str]]:
        """(colour, shape, motion) triples this event shows."""
        return {(a.colour, a.shape, self.motion) for a in self.actors}


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines a clip's frames and its annotations."""

    clip_id: str  # unique within a written dataset
    events: tuple[Event, ...]  # consecutive segments of (nearly) equal length, in time order
    seed: int  # positions, sizes and travel are drawn from this at render time
    template: int = 0  # default paraphrase template of the caption
    noise_prefix: tuple[str, ...] = ()  # noise words before the caption
    noise_suffix: tuple[str, ...] = ()  # noise words after the caption

    @property
    def captioned(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.captioned)

    def combinations(self) -> set[tuple[str, str, str]]:
        """(colour, shape, motion) triples shown anywhere in the clip, distractors included."""
        return set().union(*(e.combinations() for e in self.events))


@dataclass(frozen=True)
class WorldConfig:
    """What the world can show and how clips are rendered."""

    size: int = 64  # frame height and width in pixels (even, for yuv420p)
    frames: int = 12  # frames per clip
    fps: int = 8  # frame rate of written videos
    colours: tuple[str, ...] = tuple(COLOURS)  # colours actors are drawn from
    shapes: tuple[str, ...] = SHAPES  # shapes actors are drawn from
    motions: tuple[str, ...] = MOTIONS  # motions events are drawn from (uniformly)
    segments: int = 1  # captioned events per clip
    distractor_prob: float = 0.0  # chance a clip gets one extra uncaptioned segment, first or last
    noise_prob: float = 0.0  # chance a caption gets noise words
    max_noise_words: int = 3  # noise words per noisy caption, 1..this many
    trail_steps: int = 5  # copies of the shape in a still image's fading trail
    background: tuple[int, int, int] = (24, 24, 24)  # RGB of the empty frame

    def __post_init__(self):
        for kind, chosen, known in (("colour", self.colours, COLOURS), ("shape", self.shapes, SHAPES),
                                    ("motion", self.motions, MOTIONS)):
            unknown = [c for c in chosen if c not in known]
            if unknown or not chosen:
                raise StanchatError(f"unknown {kind}(s) {unknown or 'none given'}; valid: {', '.join(known)}")
        if self.size < 16 or self.size % 2:
            raise StanchatError(f"size must be an even number of pixels >= 16, got {self.size}")
        if self.frames < 2 * (self.segments + 1):
            raise StanchatError(f"{self.frames} frames are too few for {self.segments} segment(s) (+1 distractor); use more")


def sample_specs(
    n: int, seed: int, config: WorldConfig = WorldConfig(), prefix: str = "clip",
    exclude: frozenset = frozenset(), only: frozenset | None = None,
) -> list[ClipSpec]:
    """`n` clip specs, identical for identical arguments.

    `exclude`: (colour, shape, motion) triples that must not appear anywhere in a clip (the
    training side of a held-out split). `only`: every captioned event shows one of these
    triples (the test side). Actors within a clip are distinct, so questions are unambiguous.
    """
    rng = np.random.default_rng(seed)
    specs = []
    for i in range(n):
        events = [_sample_event(rng, config, exclude, only, used=set()) for _ in range(config.segments)]
        if rng.random() < config.distractor_prob:
            used = {a for e in events for a in e.actors}
            distractor = replace(_sample_event(rng, config, exclude | (only or frozenset()), None, used), captioned=False)
            events.insert(0 if rng.random() < 0.5 else len(events), distractor)
        noise = _noise_words(rng, config)
        half = int(rng.integers(0, len(noise) + 1))
        specs.append(ClipSpec(
            clip_id=f"{prefix}{i:05d}", events=tuple(events), seed=int(rng.integers(2**31)),
            template=int(rng.integers(TEMPLATES)), noise_prefix=noise[:half], noise_suffix=noise[half:],
        ))
    return specs


def _sample_event(rng, config: WorldConfig, exclude: frozenset, only: frozenset | None, used: set) -> Event:
    """One event by rejection sampling against `exclude` / `only` and the actors already `used`."""
    pool = sorted(c for c in only or () if c[2] in config.motions)
    if only and not pool:
        raise StanchatError(f"none of the held-out combinations uses a motion of {', '.join(config.motions)}")
    for _ in range(1000):
        if only:
            colour, shape, motion = pool[int(rng.integers(len(pool)))]
            actors = [Actor(colour, shape)]
        else:
            motion = config.motions[int(rng.integers(len(config.motions)))]
            actors = [_sample_actor(rng, config)]
        if motion == "appear":
            actors += [_sample_actor(rng, config) for _ in range(int(rng.integers(1, 3)))]
        event = Event(motion, tuple(actors))
        if len(set(actors)) == len(actors) and not used & set(actors) and not event.combinations() & exclude:
            used.update(actors)
            return event
    raise StanchatError("cannot sample an event outside the held-out set; hold out fewer combinations")


def _sample_actor(rng, config: WorldConfig) -> Actor:
    return Actor(config.colours[int(rng.integers(len(config.colours)))], config.shapes[int(rng.integers(len(config.shapes)))])


def _noise_words(rng, config: WorldConfig) -> tuple[str, ...]:
    if rng.random() >= config.noise_prob:
        return ()
    count = int(rng.integers(1, config.max_noise_words + 1))
    return tuple(NOISE_WORDS[int(k)] for k in rng.choice(len(NOISE_WORDS), size=count, replace=False))


def all_combinations(config: WorldConfig = WorldConfig()) -> list[tuple[str, str, str]]:
    """Every (colour, shape, motion) triple the config can show."""
    return list(itertools.product(config.colours, config.shapes, config.motions))


def holdout_combinations(count: int, seed: int, config: WorldConfig = WorldConfig()) -> frozenset:
    """`count` (colour, shape, motion) triples to hold out of training, chosen by `seed` so that
    every colour, shape and motion still appears in some training triple (the held-out clips
    test composition, not unseen words)."""
    rng = np.random.default_rng(seed)
    pool = all_combinations(config)
    held: set = set()
    for k in rng.permutation(len(pool)):
        if len(held) == count:
            break
        trial = held | {pool[k]}
        kept = [c for c in pool if c not in trial]
        if all({c[i] for c in kept} == set(values) for i, values in
               enumerate((config.colours, config.shapes, config.motions))):
            held = trial
    if len(held) < count:
        raise StanchatError(f"cannot hold out {count} combinations and keep every colour, shape and motion in training")
    return frozenset(held)


def flipped(spec: ClipSpec) -> ClipSpec:
    """The clip with each captioned event's motion reversed: the opposite direction, grow <->
    shrink, the appearance order reversed. Distractors, the seed and the caption template stay,
    so a caption of the flipped spec differs from the original only in those words."""
    events = tuple(
        e if not e.captioned else
        replace(e, actors=e.actors[::-1]) if e.motion == "appear" else replace(e, motion=OPPOSITE[e.motion])
        for e in spec.events
    )
    return replace(spec, events=events)


def event_sentence(event: Event, template: int = 0) -> str:
    """One event in words, with paraphrase `template` (0..TEMPLATES-1)."""
    first, the, t = _a(event.actors[0].name), f"the {event.actors[0].name}", template % TEMPLATES
    if event.motion in DIRECTIONS:
        words = _DIRECTION_WORDS[event.motion]
        return (f"{first} moves {event.motion}", f"{the} is moving {words}", f"{first} sliding {words}")[t]
    if event.motion in _SIZE_WORDS:
        return f"{the if t == 1 else first} {_SIZE_WORDS[event.motion][t]}"
    rest = ", then ".join(_a(a.name) for a in event.actors[1:])
    return (f"{first} appears, then {rest}", f"first {first} appears, then {rest}", f"{first} shows up, then {rest}")[t]


def _a(name: str) -> str:
    """`name` with its indefinite article: "a red circle", "an orange square"."""
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def caption(spec: ClipSpec, template: int | None = None, noise: bool = True) -> str:
    """The clip's caption: its captioned events joined with ", then ", plus its noise words."""
    t = spec.template if template is None else template
    body = ", then ".join(event_sentence(e, t) for e in spec.captioned)
    return " ".join([*spec.noise_prefix, body, *spec.noise_suffix]) if noise else body


def paragraph(spec: ClipSpec) -> str:
    """The captioned events as separate sentences joined by spaces (a DiDeMo paragraph), no noise."""
    return " ".join(event_sentence(e, spec.template) for e in spec.captioned)


def contrast_caption(spec: ClipSpec, template: int | None = None) -> str:
    """The caption of the time-reversed clip (`flipped`), without noise words: it differs from
    the true caption only in direction / size change / order, so only temporal features can
    tell them apart."""
    return caption(flipped(spec), template, noise=False)


def qa_pairs(spec: ClipSpec) -> list[tuple[str, str]]:
    """(question, one- or two-word answer) pairs about the captioned events. A question that
    another event of the clip (a distractor included) would answer differently is left out."""
    asked = [q for e in spec.events for q in _questions(e)]
    counts: dict[str, int] = {}
    for question, _, captioned in asked:
        counts[question] = counts.get(question, 0) + 1
    return [(q, a) for q, a, captioned in asked if captioned and counts[q] == 1]


def _questions(event: Event) -> list[tuple[str, str, bool]]:
    """(question, answer, captioned) for one event."""
    actor, c = event.actors[0], event.captioned
    if event.motion in DIRECTIONS:
        return [(f"Which way does the {actor.name} move?", event.motion, c),
                (f"What colour is the {actor.shape} that moves {event.motion}?", actor.colour, c)]
    if event.motion in OPPOSITE:
        return [(f"Does the {actor.name} grow or shrink?", event.motion, c),
                (f"What shape {_SIZE_WORDS[event.motion][0]}?", actor.shape, c)]
    return [("Which shape appears first?", actor.name, c), ("Which shape appears last?", event.actors[-1].name, c)]


def motion_class(spec: ClipSpec) -> str:
    """The recognition class of a clip: the words of its first captioned event's motion."""
    return MOTION_CLASSES[spec.captioned[0].motion]
