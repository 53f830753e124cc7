"""One browser tab's chat about one video, and what each button of the app does to it.

A `Conversation` holds the tab's `stanchat.Session` (the video decoded and, after the first
question, encoded once), the messages the chat shows, and the answer being generated, so that
Stop can end it. It knows nothing of Gradio: `stanchat.app.ui` turns its state into components.
Problems a user can cause (a bad upload, a too-long video, a prompt over the context) become a
message in the chat, never an exception out of the app, worded for the app (`wording`); a value out
of a control's range is clamped, and the line saying so is in `notices`. Its files (the upload it
uses, its frame strip) go when it does (`files`).
"""

from __future__ import annotations

import html
import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stanchat.app.config import AppConfig
from stanchat.app.files import ConversationFiles, Uploads
from stanchat.app.wording import clamp, for_the_app
from stanchat.errors import StanchatError
from stanchat.video import Preprocessor, SampledFrames

if TYPE_CHECKING:
    from stanchat.chat import VideoChat
    from stanchat.session import Answer, Session, Stream

logger = logging.getLogger(__name__)

THUMBNAIL_HEIGHT = 112  # pixels: frames in the strip are at most this tall (and as wide: the tower's squares)
NO_VIDEO = "Upload a video or pick an example first, then ask about it."
STOPPED = " ⏹ (stopped)"  # after an answer that Stop ended
EMPTY = "(empty answer)"
WARNING = "⚠️ "
TEMPERATURE_RANGE = (0.0, 2.0)  # the temperature control's range
MIN_MAX_NEW_TOKENS = 1024  # the answer-length control reaches at least this far


def max_frames(chat: "VideoChat", config: AppConfig) -> int:
    """The frame-count controls' maximum: what STAN's temporal embedding covers (else the start value)."""
    return chat.graft.max_frames or config.frames


def max_new_tokens_limit(config: AppConfig) -> int:
    """The answer-length control's maximum."""
    return max(MIN_MAX_NEW_TOKENS, config.max_new_tokens)


def message(role: str, text: str, note: str = "") -> dict[str, str]:
    """A chat message in Gradio's messages format, shown as plain text: the chat (render_markdown
    off) still reads HTML, so `<`, `>` and `&` are escaped. `note` (e.g. STOPPED) follows the text."""
    return {"role": role, "content": html.escape(text + note, quote=False)}


def message_text(chat_message: dict[str, str]) -> str:
    """The text a `message` was made from."""
    return html.unescape(chat_message["content"])


@dataclass
class FrameWeights:
    """Which frames a question attends to."""

    question: str  # the question, as asked
    weights: list[float]  # Mug weight of each sampled frame, in frame order, summing to 1


@dataclass
class Side:
    """One side of a comparison: how the video reaches the LLM."""

    temporal: str  # stan | mean | concat
    frames: int  # frames sampled


class Conversation:
    """The state of one tab: `messages` (what the chat shows), `session` (None until a video
    decodes), `strip` (the sampled frames' image files and timestamps), `weights` (the last
    question's `FrameWeights`; None before one, or without a text tower), `answer` (the last finished
    `Answer`), `compared` (each side's `Answer` of the last comparison), `notices` (lines about the
    last event's values: what a control was clamped to). `uploads` is shared by the app's tabs;
    `root` is where the strip is written (Gradio's cache folder, which serves it)."""

    def __init__(self, chat: "VideoChat", config: AppConfig, uploads: Uploads | None = None,
                 root: str | None = None):
        self.chat = chat
        self.config = config
        self.files = ConversationFiles(uploads if uploads is not None else Uploads(), root)
        weakref.finalize(self, self.files.close)  # when Gradio drops the tab's state
        self.messages: list[dict[str, str]] = []
        self.strip: list[tuple[str, str]] = []
        self.notices: list[str] = []
        self.session: Session | None = None
        self.weights: FrameWeights | None = None
        self.answer: Answer | None = None
        self.compared: list[Answer | None] = []
        self.display_name = ""  # the video's name as the user knows it
        self._stream: Stream | None = None  # the answer in progress, for stop()
        self._stopped = False
        self._frame_features: Any = None  # (T, P) text-tower features of the current clip
        self._shown: SampledFrames | None = None  # the clip the strip shows

    @property
    def clip(self) -> SampledFrames | None:
        return self.session.video if self.session is not None else None

    # ---- the video ----

    def frame_count(self, requested: float, control: str = "Frames sampled") -> int:
        """`requested` frames as the model can take them (1..max_frames), noting any change."""
        high = max_frames(self.chat, self.config)
        why = "what STAN's temporal embedding covers" if self.chat.graft.max_frames else ""
        used, note = clamp(round(requested), 1, high, control, why)
        self._note(note)
        return int(used)

    def generation(self, max_new_tokens: float, temperature: float) -> dict[str, Any]:
        """The generation settings as the controls allow them, noting any change."""
        tokens, note = clamp(round(max_new_tokens), 1, max_new_tokens_limit(self.config), "Max new tokens")
        self._note(note)
        temperature, note = clamp(float(temperature), *TEMPERATURE_RANGE, "Temperature")
        self._note(note)
        return {"max_new_tokens": int(tokens), "temperature": temperature}

    def _note(self, note: str) -> None:
        if note:
            self.notices.append(note)

    def open(self, path: str | None, frames: int, temporal: str) -> None:
        """Start over with the video at `path` (None: no video). A video that cannot be used
        leaves a message in the chat and no session."""
        self.stop()
        self.messages, self.session, self.weights, self.answer = [], None, None, None
        self._frame_features = None
        self._show(None)
        if path is None:
            self.files.use_upload(None)
            return
        self.display_name = Path(path).name  # gradio keeps the uploaded file's name
        self.files.use_upload(path)  # held while it is read
        try:
            self.session = self._session(path, frames, temporal)
        except Exception as err:
            self._warn(err, path)
        if self.session is None:  # a file that cannot be used is given back: an upload no one else holds goes now
            self.files.use_upload(None)
        self._show(self.clip)

    def configure(self, frames: int, temporal: str) -> None:
        """Re-sample the video or switch the temporal mode, keeping the conversation."""
        if self.session is None or (frames, temporal) == (self.session.frames, self.session.temporal):
            return
        try:
            if frames != self.session.frames or self.config.select == "question":
                session = self._session(self.session.video.path, frames, temporal, self.session.history)
                self._frame_features, self.weights = None, None
            else:  # the same frames, encoded the other way: nothing is decoded again
                session = self.chat.session(self.session.video, frames, temporal, self.session.history,
                                            segments=self.config.video_options(frames, temporal).segments)
            self.session = session
        except Exception as err:
            self._warn(err, self.session.video.path)
        self._show(self.clip)

    def _show(self, clip: SampledFrames | None) -> None:
        """Write the strip for `clip` (None: no strip) unless it shows that clip already."""
        if clip is None:
            self.files.clear_strip()
            self.strip, self._shown = [], None
        elif clip is not self._shown:
            images = thumbnails(clip, self.chat.preprocessor)
            self.strip = list(zip(self.files.write_strip(images), frame_labels(clip.timestamps)))
            self._shown = clip

    def _session(self, path: str, frames: int, temporal: str, history: list | None = None) -> "Session":
        """A session on the video at `path`, sampled with the app's options; a video longer, or with
        larger frames, than the app takes is refused before any frame is decoded."""
        options = self.config.video_options(frames, temporal)
        limits = {"max_seconds": self.config.max_duration, "max_pixels": self.config.max_frame_pixels}
        if options.select == "question":  # each question selects its frames: the session keeps the candidates
            return self.chat.session(path, history=history, **limits, **options.__dict__)
        encoded = self.chat.encode(path, options, **limits)
        return self.chat.session(encoded, history=history)

    def _warn(self, err: Exception, path: str | None = None) -> None:
        """Show a problem in the chat; the server's temporary path becomes the file's name."""
        text = problem(err, "could not use this video" if path else "could not answer")
        if path:
            text = text.replace(str(path), self.display_name or Path(path).name)
        self.messages.append(message("assistant", WARNING + text))

    # ---- chatting ----

    def ask(self, question: str, **generation: Any) -> Iterator[None]:
        """Answer `question`, yielding after every streamed piece (`messages[-1]` grows)."""
        question = question.strip()
        if not question:
            return
        self.messages.append(message("user", question))
        if self.session is None:
            self.messages.append(message("assistant", NO_VIDEO))
            yield
            return
        self.messages.append(message("assistant", ""))
        yield  # the question shows at once
        try:
            self.weights = self._frame_weights(question)
            stream = self.session.stream(question, **generation)
        except Exception as err:
            self.messages.pop()
            self._warn(err)
            yield
            return
        for text, note in self._run(stream):
            self.messages[-1] = message("assistant", text, note)
            yield
        if stream.answer is not None:
            self.answer = stream.answer

    def regenerate(self, **generation: Any) -> Iterator[None]:
        """Drop the last answer (and its turn in the history) and answer its question again."""
        asked = [i for i, m in enumerate(self.messages) if m["role"] == "user"]
        if not asked:
            return
        question = message_text(self.messages[asked[-1]])
        del self.messages[asked[-1]:]
        if self.session is not None and self.session.history and self.session.history[-1][0] == question:
            self.session.history.pop()
        yield from self.ask(question, **generation)

    def clear(self) -> None:
        """Forget the conversation; keep the video (and its encoding)."""
        self.stop()
        self.messages, self.weights, self.answer = [], None, None
        if self.session is not None:
            self.session.reset()

    def stop(self) -> None:
        """End the answer being generated (from any thread); what was said so far stays."""
        stream = self._stream
        if stream is not None:
            self._stopped = True
            stream.close()

    def _run(self, stream: "Stream") -> Iterator[tuple[str, str]]:
        """(the answer's text so far, a note) after each piece; errors, stops and empty answers end
        it with a note."""
        self._stream, self._stopped, text = stream, False, ""
        try:
            for piece in stream:
                text += piece
                yield text, ""
        except Exception as err:
            yield f"{text}\n\n{WARNING}{problem(err, 'generation failed')}", ""
            return
        finally:
            self._stream = None
        if self._stopped:
            yield text, STOPPED
        elif not text:
            yield text, EMPTY

    def _frame_weights(self, question: str) -> FrameWeights | None:
        """The question's Mug weight on each frame (the text-to-frame plot), or None without a text tower."""
        relevance = self.chat.relevance
        if relevance is None or self.session is None:
            return None
        if self._frame_features is None:
            self._frame_features = relevance.frame_features(self.session.video)  # (T, P), once per clip
        return FrameWeights(question, relevance.weights(question, self._frame_features).tolist())

    # ---- side by side ----

    def compare(self, question: str, sides: list[Side], **generation: Any) -> Iterator[list[str]]:
        """Answer `question` once per side (fresh single-turn sessions), streaming every side's text."""
        texts = [""] * len(sides)
        self.compared = [None] * len(sides)
        if self.session is None:
            yield [NO_VIDEO] * len(sides)
            return
        if not question.strip():
            yield ["Type a question to compare the answers."] * len(sides)
            return
        for k, side in enumerate(sides):
            try:
                if side.frames == self.session.frames and self.config.select != "question":  # the frames sampled
                    session = self.chat.session(self.session.video, side.frames, side.temporal,
                                                segments=self.config.video_options(side.frames, side.temporal).segments)
                else:
                    session = self._session(self.session.video.path, side.frames, side.temporal)
                stream = session.stream(question, **generation)
            except Exception as err:
                texts[k] = WARNING + problem(err, "could not answer")
                yield texts
                continue
            for text, note in self._run(stream):
                texts[k] = text + note
                yield texts
            self.compared[k] = stream.answer


def problem(err: Exception, doing: str) -> str:
    """One line for the chat. A user's problem (StanchatError) is its own message, in the app's
    words; anything else is logged with its traceback and named after what failed, so that the app
    lives on."""
    if isinstance(err, StanchatError):
        return for_the_app(err)
    logger.error("%s", doing, exc_info=err)
    return f"{doing} ({type(err).__name__}: {err})"


def thumbnails(clip: SampledFrames, preprocessor: Preprocessor, height: int = THUMBNAIL_HEIGHT) -> list[np.ndarray]:
    """The sampled frames as `preprocessor` feeds them to the tower (its centre crop, or the whole
    frame squashed to a square), shrunk to at most `height` pixels: (h, h, 3) uint8 each."""
    from PIL import Image

    strip = []
    for picture in preprocessor.pictures(clip):  # (crop, crop, 3) uint8
        image = Image.fromarray(picture)
        if picture.shape[0] > height:
            image = image.resize((height, height), Image.Resampling.BILINEAR)
        strip.append(np.asarray(image))
    return strip


def frame_labels(timestamps: list[float]) -> list[str]:
    """'1.25 s' per frame; a timestamp a short video repeats gets its count: '1.25 s (2)'."""
    labels, seen = [], {}
    for seconds in timestamps:
        text = f"{seconds:.2f} s"
        seen[text] = seen.get(text, 0) + 1
        labels.append(text if seen[text] == 1 else f"{text} ({seen[text]})")
    return labels


def describe_video(conversation: Conversation) -> str:
    """A Markdown line about the video and how the LLM sees it."""
    session = conversation.session
    if session is None:
        return ""
    clip = session.video
    timing = "still image" if clip.duration == 0 else f"{clip.duration:.1f} s · {clip.fps:.0f} fps"
    return (f"**{conversation.display_name}** · {timing} · {clip.width}×{clip.height} · "
            f"{session.frames} frames → {session.video_tokens} video tokens · `{session.temporal}`")


def describe_notices(conversation: Conversation) -> str:
    """The last event's notices as Markdown lines (what a control was clamped to)."""
    return "\n\n".join(WARNING + note for note in conversation.notices)


def describe_answer(answer: "Answer | None") -> str:
    """A Markdown line about what the last answer cost."""
    if answer is None:
        return ""
    t = answer.timings
    return (f"last answer: `{answer.temporal}`, {answer.frames} frames, {answer.video_tokens} video tokens · "
            f"vision {t['vision']:.2f} s · prefill {t['prefill']:.2f} s · generate {t['generate']:.2f} s")
