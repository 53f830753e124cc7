"""What each event of the app does: `Events` takes component values and the tab's `Conversation`,
and returns the components' new values (Gradio updates), in the order `stanchat.app.ui` wires them.

Values arrive as the browser sent them (`preprocess=False`: an upload as Gradio's file dict, a
number as typed). A value a control sent out of its range is clamped by the conversation and sent
back to the control, with the reason in the info line. After each event that frees a video's buffers, the
allocator's free memory goes back to the system (`memory`).
"""

from __future__ import annotations

import gc
import weakref
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from stanchat.app.config import AppConfig, is_video_file
from stanchat.app.conversation import (
    Conversation,
    Side,
    describe_answer,
    describe_notices,
    describe_video,
    frame_labels,
)
from stanchat.app.files import Uploads
from stanchat.app.memory import release_free_memory

if TYPE_CHECKING:
    from stanchat.chat import VideoChat

MAX_FRAMES_SHOWN = 8  # the strip's columns; more frames wrap onto further rows
STRIP_ROW_HEIGHT = 84  # pixels per row of square thumbnails (stanchat.app.server.CSS sizes them)
STRIP_MAX_ROWS = 3  # rows shown before the strip scrolls
PLOT_QUESTION_CHARS = 60  # the question is quoted in the plot's label up to this length


class Events:
    """The event handlers of one app. `app`: the Blocks they serve, whose cache folder holds the
    conversations' strips and whose upload set says which files came as uploads."""

    def __init__(self, chat: "VideoChat", config: AppConfig, app: gr.Blocks):
        self.chat = chat
        self.config = config
        self.uploads = Uploads(is_upload=lambda path: path in app.upload_file_set)
        self.root = app.GRADIO_CACHE
        self.live: weakref.WeakSet[Conversation] = weakref.WeakSet()  # conversations not yet freed

    def _conversation(self, conversation: Conversation | None) -> Conversation:
        """The tab's conversation (a new one on its first event), its notices cleared for this event."""
        if conversation is None:
            if len(self.live) >= self.config.max_sessions:
                # Gradio drops the oldest tab's state to make room, but that state sits in reference
                # cycles of Gradio's own: without a collection now its video and its files would stay
                # until the interpreter's next full collection, however late that comes. Once per
                # dropped tab: a full collection took 0.26 s (timed by hand, no test or benchmark
                # does) with ~530k objects, the tiny preset loaded and its app built, on 2 slow cores
                gc.collect()
            conversation = Conversation(self.chat, self.config, self.uploads, self.root)
            self.live.add(conversation)
        conversation.notices = []
        return conversation

    def open(self, upload: dict | None, frames: float, temporal: str, conversation: Conversation | None):
        conversation = self._conversation(conversation)
        frames = conversation.frame_count(frames)
        conversation.open(upload["path"] if upload else None, frames, temporal)
        release_free_memory()  # the last video's buffers, and those of a conversation Gradio dropped
        video, image = _previews(conversation)
        return (conversation, frames, video, image, strip(conversation), conversation.messages, plot(conversation),
                _info(conversation))

    def configure(self, frames: float, temporal: str, conversation: Conversation | None):
        conversation = self._conversation(conversation)
        frames = conversation.frame_count(frames)
        conversation.configure(frames, temporal)
        release_free_memory()
        return conversation, frames, strip(conversation), conversation.messages, _info(conversation)

    def ask(self, question: str, conversation: Conversation | None, max_new_tokens: float, temperature: float):
        conversation = self._conversation(conversation)
        generation = conversation.generation(max_new_tokens, temperature)
        yield from self._chat(conversation, conversation.ask(question, **generation), generation)

    def regenerate(self, conversation: Conversation | None, max_new_tokens: float, temperature: float):
        conversation = self._conversation(conversation)
        generation = conversation.generation(max_new_tokens, temperature)
        yield from self._chat(conversation, conversation.regenerate(**generation), generation)

    def _chat(self, conversation: Conversation, steps, generation: dict[str, Any]):
        """Outputs after each streamed piece; the plot when it changes (before the answer starts)."""
        shown = object()
        for _ in steps:
            update = gr.skip() if conversation.weights is shown else plot(conversation)
            shown = conversation.weights
            yield conversation, conversation.messages, "", update, gr.skip(), gr.skip(), gr.skip()
        release_free_memory()
        yield (conversation, conversation.messages, "", plot(conversation), _info(conversation, answer=True),
               generation["max_new_tokens"], generation["temperature"])

    def stop(self, conversation: Conversation | None) -> None:
        if conversation is not None:
            conversation.stop()

    def clear(self, conversation: Conversation | None):
        conversation = self._conversation(conversation)
        conversation.clear()
        release_free_memory()
        return conversation, conversation.messages, plot(conversation), _info(conversation)

    def compare(self, question: str, mode_a: str, frames_a: float, mode_b: str, frames_b: float,
                conversation: Conversation | None, max_new_tokens: float, temperature: float):
        conversation = self._conversation(conversation)
        sides = [Side(mode, conversation.frame_count(frames, f"{name}: frames"))
                 for name, mode, frames in (("A", mode_a, frames_a), ("B", mode_b, frames_b))]
        generation = conversation.generation(max_new_tokens, temperature)
        used = (sides[0].frames, sides[1].frames, generation["max_new_tokens"], generation["temperature"])
        texts = ["", ""]
        for texts in conversation.compare(question, sides, **generation):
            yield conversation, *used, texts[0], texts[1], gr.skip()
        release_free_memory()
        lines = [f"**{name}** · {describe_answer(answer)}" for name, answer in zip("AB", conversation.compared)
                 if answer is not None]
        yield conversation, *used, texts[0], texts[1], "\n\n".join(filter(None, [describe_notices(conversation),
                                                                               *lines]))


def _previews(conversation: Conversation):
    """The upload shown as a video (a video file) or an image (a GIF or a still), once it is in use."""
    path = conversation.clip.path if conversation.clip is not None else None
    video = path is not None and is_video_file(path)
    image = path is not None and not video
    return (gr.Video(value=path if video else None, visible=video),
            gr.Image(value=path if image else None, visible=image))


def strip(conversation: Conversation):
    """The frames strip: one thumbnail per sampled frame, captioned with its timestamp."""
    count = len(conversation.strip)
    if not count:
        return gr.Gallery(value=None, label="Sampled frames")
    rows = -(-count // MAX_FRAMES_SHOWN)  # ceil
    return gr.Gallery(value=conversation.strip, columns=min(count, MAX_FRAMES_SHOWN), height=strip_height(rows),
                      label=f"Sampled frames ({count})")


def strip_height(rows: int) -> int:
    """Pixels for `rows` rows of thumbnails, scrolling past STRIP_MAX_ROWS."""
    return 40 + STRIP_ROW_HEIGHT * min(rows, STRIP_MAX_ROWS)


def plot(conversation: Conversation):
    """The last question's weight on each frame as bars in frame order; hidden without one."""
    clip, found = conversation.clip, conversation.weights
    if clip is None or found is None:
        return gr.BarPlot(value=None, visible=False)
    labels = frame_labels(clip.timestamps)
    question = found.question
    if len(question) > PLOT_QUESTION_CHARS:
        question = question[:PLOT_QUESTION_CHARS] + "…"
    return gr.BarPlot(value=pd.DataFrame({"frame": labels, "weight": found.weights}), sort=labels, visible=True,
                      label=f"Which frames “{question}” attends to (Mug text-to-frame weights)")


def _info(conversation: Conversation, answer: bool = False) -> str:
    """The info line: the event's notices, the video, and (after an answer) what the answer cost."""
    lines = (describe_notices(conversation), describe_video(conversation),
             describe_answer(conversation.answer) if answer else "")
    return "\n\n".join(line for line in lines if line)
