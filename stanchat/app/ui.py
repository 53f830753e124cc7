"""`build_app(chat, config) -> gr.Blocks`: the chat app's layout and its events.

Left: the video (upload or an example), the frame-count slider, the temporal mode and the
generation settings. Right: the sampled frames as a strip with their timestamps, then a Chat tab
(streamed answers, Stop, Regenerate, Clear) and a Compare tab (one question, two ways of showing
the video to the LLM, side by side), and, when the model has a text tower, a bar chart of the
question's Mug weight on each frame (paper Fig. 10).

Every event that touches the model shares one concurrency group ("model"), whose limit is the
queue's default (AppConfig.concurrency), so that users cannot together exhaust memory; Stop runs
outside the queue so that it reaches a generation that holds the group. Each tab keeps a
`Conversation` in a `gr.State`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from stanchat.app.config import AppConfig
from stanchat.app.conversation import Conversation, Side, describe_answer, describe_video, frame_labels, thumbnails
from stanchat.options import TEMPORAL_MODES

if TYPE_CHECKING:
    from stanchat.chat import VideoChat

MODEL = "model"  # the concurrency group of every event that runs the model
MAX_FRAMES_SHOWN = 8  # the strip's columns; more frames wrap onto further rows
STRIP_ROW_HEIGHT = 84  # pixels per row of square thumbnails (stanchat.app.server.CSS sizes them)
STRIP_MAX_ROWS = 3  # rows shown before the strip scrolls
TEMPORAL_INFO = ("stan: one image's tokens via the STAN branch · mean: frame-mean baseline · "
                 "concat: every frame's tokens")
PLOT_LABEL = "Which frames the question attends to (Mug text-to-frame weights)"
PLOT_QUESTION_CHARS = 60  # the question is quoted in the plot's label up to this length


def build_app(chat: "VideoChat", config: AppConfig | None = None) -> gr.Blocks:
    """The Gradio app for `chat` (a `stanchat.load(...)` result). Launch it with
    `stanchat.app.server.launch`, which sets the queue and the limits in `config`."""
    config = config or AppConfig()
    events = _Events(chat, config)
    # uploads are deleted once no idle conversation could still need them
    cache = (int(config.idle_timeout), int(config.idle_timeout))
    with gr.Blocks(title="stanchat", analytics_enabled=False, delete_cache=cache) as app:
        state = gr.State(None, time_to_live=config.idle_timeout)  # the tab's Conversation
        gr.Markdown(f"## stanchat · video chat\n`{chat.name}` — a video of any length reaches the LLM as "
                    f"one image's worth of tokens through the Mug-STAN branch.", elem_id="header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                controls = _controls(chat, config)
            with gr.Column(scale=3, min_width=420):
                # square thumbnails cropped like the tower's centre crop: what the model sees of each frame
                strip = gr.Gallery(label="Sampled frames", columns=MAX_FRAMES_SHOWN, height=_strip_height(1),
                                   object_fit="cover", allow_preview=True, elem_id="frames", interactive=False)
                with gr.Tabs():
                    with gr.Tab("Chat", id="chat"):
                        chat_tab = _chat_tab()
                    with gr.Tab("Compare", id="compare"):
                        compare_tab = _compare_tab(chat, config)
                # shown once a question has weights: only when the model has a text tower
                plot = gr.BarPlot(x="frame", y="weight", label=PLOT_LABEL, visible=False, y_lim=[0, None],
                                  x_label_angle=-45, height=220, elem_id="weights")
        _wire(events, state, controls, chat_tab, compare_tab, strip, plot)
    return app


def _controls(chat: "VideoChat", config: AppConfig) -> dict[str, Any]:
    video = gr.Video(label="Video", sources=["upload"], height=260, elem_id="video")
    if config.examples:
        gr.Examples(examples=[[path] for path in config.examples], inputs=[video], label="Examples")
    max_frames = chat.graft.max_frames or config.frames
    frames = gr.Slider(1, max_frames, value=config.frames, step=1, label="Frames sampled", elem_id="frames-slider")
    temporal = gr.Radio(list(TEMPORAL_MODES), value=config.temporal, label="Temporal mode", info=TEMPORAL_INFO)
    with gr.Accordion("Generation", open=False):
        max_new_tokens = gr.Slider(1, max(1024, config.max_new_tokens), value=config.max_new_tokens, step=1,
                                   label="Max new tokens")
        temperature = gr.Slider(0.0, 2.0, value=config.temperature, step=0.05, label="Temperature (0 = greedy)")
    info = gr.Markdown(elem_id="info")
    return dict(video=video, frames=frames, temporal=temporal, max_new_tokens=max_new_tokens,
                temperature=temperature, info=info)


def _chat_tab() -> dict[str, Any]:
    # plain text: model output is not Markdown, and a stray `*` or `<` must not restyle or hide it
    chatbot = gr.Chatbot(label="Chat", height=360, elem_id="chatbot", buttons=["copy"], render_markdown=False,
                         placeholder="Upload a video or pick an example, then ask about it.")
    with gr.Row():
        question = gr.Textbox(placeholder="Ask about the video…", show_label=False, scale=5, elem_id="question")
        send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="send")
    with gr.Row():
        stop = gr.Button("Stop", variant="stop", elem_id="stop")
        regenerate = gr.Button("Regenerate", elem_id="regenerate")
        clear = gr.Button("Clear", elem_id="clear")
    return dict(chatbot=chatbot, question=question, send=send, stop=stop, regenerate=regenerate, clear=clear)


def _compare_tab(chat: "VideoChat", config: AppConfig) -> dict[str, Any]:
    question = gr.Textbox(label="Question for both", placeholder="Ask once, answered two ways",
                          elem_id="compare-question")
    max_frames = chat.graft.max_frames or config.frames
    sides = []
    with gr.Row():
        for name, temporal in (("A", config.temporal), ("B", "mean" if config.temporal != "mean" else "stan")):
            with gr.Column():
                mode = gr.Radio(list(TEMPORAL_MODES), value=temporal, label=f"{name}: temporal mode")
                frames = gr.Slider(1, max_frames, value=config.frames, step=1, label=f"{name}: frames")
                answer = gr.Textbox(label=f"{name}: answer", lines=6, interactive=False,
                                    elem_id=f"answer-{name.lower()}")
                sides.append((mode, frames, answer))
    with gr.Row():
        run = gr.Button("Compare", variant="primary", elem_id="compare")
        stop = gr.Button("Stop", variant="stop", elem_id="compare-stop")
    info = gr.Markdown(elem_id="compare-info")
    return dict(question=question, sides=sides, run=run, stop=stop, info=info)


def _wire(events: "_Events", state, controls: dict, chat_tab: dict, compare_tab: dict, strip, plot) -> None:
    """Connect the components to `events`; every model call shares the MODEL group."""
    model = dict(concurrency_id=MODEL)
    video, frames, temporal, info = (controls[name] for name in ("video", "frames", "temporal", "info"))
    chatbot, question = chat_tab["chatbot"], chat_tab["question"]
    generation = [controls["max_new_tokens"], controls["temperature"]]
    chat_out = [state, chatbot, question, plot, info]

    video.change(events.open, [video, frames, temporal, state], [state, strip, chatbot, plot, info],
                 **_api("load_video"), **model)
    for trigger, api in ((temporal.change, _api("settings")), (frames.release, _hidden())):
        trigger(events.configure, [frames, temporal, state], [state, strip, chatbot, info], **api, **model)
    question.submit(events.ask, [question, state, *generation], chat_out, **_api("ask"), **model)
    chat_tab["send"].click(events.ask, [question, state, *generation], chat_out, **_hidden(), **model)
    chat_tab["regenerate"].click(events.regenerate, [state, *generation], chat_out, **_api("regenerate"), **model)
    # Stop runs outside the queue: the generation it ends holds the model group
    chat_tab["stop"].click(events.stop, [state], None, queue=False, **_api("stop"))
    compare_tab["stop"].click(events.stop, [state], None, queue=False, **_hidden())
    for trigger, api in ((chat_tab["clear"].click, _api("clear")), (chatbot.clear, _hidden())):
        trigger(events.stop, [state], None, queue=False, **_hidden()).then(
            events.clear, [state], [state, chatbot, plot, info], **api, **model)
    (a_mode, a_frames, a_answer), (b_mode, b_frames, b_answer) = compare_tab["sides"]
    compare_tab["run"].click(events.compare, [compare_tab["question"], a_mode, a_frames, b_mode, b_frames, state,
                                              *generation],
                             [state, a_answer, b_answer, compare_tab["info"]], **_api("compare"), **model)


def _api(name: str) -> dict[str, Any]:
    """An endpoint that clients (gradio_client, the tests) call by name."""
    return {"api_name": name}


def _hidden() -> dict[str, Any]:
    """A second trigger of an endpoint that already has a name."""
    return {"api_visibility": "private"}


class _Events:
    """The event handlers: each takes component values and the tab's Conversation, returns outputs."""

    def __init__(self, chat: "VideoChat", config: AppConfig):
        self.chat = chat
        self.config = config

    def _conversation(self, conversation: Conversation | None) -> Conversation:
        return conversation if conversation is not None else Conversation(self.chat, self.config)

    def open(self, video: str | None, frames: int, temporal: str, conversation: Conversation | None):
        conversation = self._conversation(conversation)
        conversation.open(video, int(frames), temporal)
        return (conversation, _strip(conversation), conversation.messages, _plot(conversation),
                describe_video(conversation))

    def configure(self, frames: int, temporal: str, conversation: Conversation | None):
        conversation = self._conversation(conversation)
        conversation.configure(int(frames), temporal)
        return conversation, _strip(conversation), conversation.messages, describe_video(conversation)

    def ask(self, question: str, conversation: Conversation | None, max_new_tokens: int, temperature: float):
        conversation = self._conversation(conversation)
        yield from self._chat(conversation, conversation.ask(question, **_generation(max_new_tokens, temperature)))

    def regenerate(self, conversation: Conversation | None, max_new_tokens: int, temperature: float):
        conversation = self._conversation(conversation)
        yield from self._chat(conversation, conversation.regenerate(**_generation(max_new_tokens, temperature)))

    def _chat(self, conversation: Conversation, steps):
        """Outputs after each streamed piece; the plot when it changes (before the answer starts)."""
        shown = object()
        for _ in steps:
            plot = gr.skip() if conversation.weights is shown else _plot(conversation)
            shown = conversation.weights
            yield conversation, conversation.messages, "", plot, gr.skip()
        yield conversation, conversation.messages, "", _plot(conversation), _info(conversation)

    def stop(self, conversation: Conversation | None) -> None:
        if conversation is not None:
            conversation.stop()

    def clear(self, conversation: Conversation | None):
        conversation = self._conversation(conversation)
        conversation.clear()
        return conversation, conversation.messages, _plot(conversation), describe_video(conversation)

    def compare(self, question: str, mode_a: str, frames_a: int, mode_b: str, frames_b: int,
                conversation: Conversation | None, max_new_tokens: int, temperature: float):
        conversation = self._conversation(conversation)
        sides = [Side(mode_a, int(frames_a)), Side(mode_b, int(frames_b))]
        texts = ["", ""]
        for texts in conversation.compare(question, sides, **_generation(max_new_tokens, temperature)):
            yield conversation, texts[0], texts[1], gr.skip()
        lines = [f"**{name}** · {describe_answer(answer)}" for name, answer in zip("AB", conversation.compared)
                 if answer is not None]
        yield conversation, texts[0], texts[1], "\n\n".join(lines)


def _generation(max_new_tokens: float, temperature: float) -> dict[str, Any]:
    return {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature)}


def _strip(conversation: Conversation):
    """The frames strip: one thumbnail per sampled frame, captioned with its timestamp."""
    clip = conversation.clip
    if clip is None:
        return gr.Gallery(value=None, label="Sampled frames")
    count = len(clip.timestamps)
    rows = -(-count // MAX_FRAMES_SHOWN)  # ceil
    return gr.Gallery(value=thumbnails(clip), columns=min(count, MAX_FRAMES_SHOWN), height=_strip_height(rows),
                      label=f"Sampled frames ({count})")


def _strip_height(rows: int) -> int:
    """Pixels for `rows` rows of thumbnails, scrolling past STRIP_MAX_ROWS."""
    return 40 + STRIP_ROW_HEIGHT * min(rows, STRIP_MAX_ROWS)


def _plot(conversation: Conversation):
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


def _info(conversation: Conversation) -> str:
    return "\n\n".join(line for line in (describe_video(conversation), describe_answer(conversation.answer)) if line)
