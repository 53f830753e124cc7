"""`build_app(chat, config) -> gr.Blocks`: the chat app's layout and its event wiring.

Left: the upload (a video, a GIF or a still image; a video plays in a preview) or an example, the
frame-count slider, the temporal mode and the generation settings. Right: the sampled frames as a
strip with their timestamps, then a Chat tab (streamed answers, Stop, Regenerate, Clear and, when
the model has a text tower, a bar chart of the question's Mug weight on each frame, paper Fig. 10)
and a Compare tab (one question, two ways of showing the video to the LLM, side by side).

Every event that touches the model shares one concurrency group ("model"), whose limit is the
queue's default (AppConfig.concurrency), so that users cannot together exhaust memory; Stop runs
outside the queue so that it reaches a generation that holds the group. Each tab keeps a
`Conversation` in a `gr.State`; what each event does is in `stanchat.app.events`.

The model's events take their inputs as sent (`preprocess=False`; Gradio still checks that an
upload's path is one of its own). Gradio's checks would refuse a number typed into a slider's box
past its range with "Value 999 is greater than maximum value 64." and nothing else; the handlers
clamp it, send the value used back and say why. The upload box's file types guide the browser's
file picker only: what a file is, the decoder decides from its content, and the chat says what is
wrong with it (gr.File's own check would also leave an empty temporary file behind per event).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from stanchat.app.config import UPLOAD_SUFFIXES, AppConfig
from stanchat.app.conversation import TEMPERATURE_RANGE, max_frames, max_new_tokens_limit
from stanchat.app.events import MAX_FRAMES_SHOWN, Events, strip_height
from stanchat.options import TEMPORAL_MODES

if TYPE_CHECKING:
    from stanchat.chat import VideoChat

MODEL = "model"  # the concurrency group of every event that runs the model
COMMIT_ON_ENTER = "commit-on-enter"  # sliders whose number box takes Enter as done (stanchat.app.server.JS)
TEMPORAL_INFO = ("stan: one image's tokens via the STAN branch · mean: frame-mean baseline · "
                 "concat: every frame's tokens")
PLOT_LABEL = "Which frames the question attends to (Mug text-to-frame weights)"


def build_app(chat: "VideoChat", config: AppConfig | None = None) -> gr.Blocks:
    """The Gradio app for `chat` (a `stanchat.load(...)` result). Serve it with
    `stanchat.app.server.launch` or `.mount`, which set the queue and the limits in `config`."""
    config = config or AppConfig()
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
                # square thumbnails of what the tower is fed (conversation.thumbnails), shown whole
                strip = gr.Gallery(label="Sampled frames", columns=MAX_FRAMES_SHOWN, height=strip_height(1),
                                   object_fit="contain", allow_preview=True, elem_id="frames", interactive=False)
                with gr.Tabs():
                    with gr.Tab("Chat", id="chat"):
                        chat_tab = _chat_tab()
                    with gr.Tab("Compare", id="compare"):
                        compare_tab = _compare_tab(chat, config)
        _wire(Events(chat, config, app), state, controls, chat_tab, compare_tab, strip)
    return app


def _frame_slider(chat: "VideoChat", config: AppConfig, label: str, **kwargs: Any) -> gr.Slider:
    return gr.Slider(1, max_frames(chat, config), value=config.frames, step=1, precision=0, label=label,
                     elem_classes=[COMMIT_ON_ENTER], **kwargs)


def _controls(chat: "VideoChat", config: AppConfig) -> dict[str, Any]:
    upload = gr.File(label="Video, GIF or image", file_types=list(UPLOAD_SUFFIXES), height=120, elem_id="video")
    preview = gr.Video(label="Video", interactive=False, visible=False, height=260, elem_id="preview-video")
    still = gr.Image(label="Image", interactive=False, visible=False, height=260, elem_id="preview-image")
    if config.examples:
        gr.Examples(examples=[[path] for path in config.examples], inputs=[upload], label="Examples")
    frames = _frame_slider(chat, config, "Frames sampled", elem_id="frames-slider")
    temporal = gr.Radio(list(TEMPORAL_MODES), value=config.temporal, label="Temporal mode", info=TEMPORAL_INFO)
    with gr.Accordion("Generation", open=False):
        max_new_tokens = gr.Slider(1, max_new_tokens_limit(config), value=config.max_new_tokens, step=1, precision=0,
                                   label="Max new tokens", elem_classes=[COMMIT_ON_ENTER])
        temperature = gr.Slider(*TEMPERATURE_RANGE, value=config.temperature, step=0.05,
                                label="Temperature (0 = greedy)", elem_classes=[COMMIT_ON_ENTER])
    info = gr.Markdown(elem_id="info")
    return dict(upload=upload, preview=preview, still=still, frames=frames, temporal=temporal,
                max_new_tokens=max_new_tokens, temperature=temperature, info=info)


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
    # the Chat question's weights: shown once a question has them (only when the model has a text tower)
    plot = gr.BarPlot(x="frame", y="weight", label=PLOT_LABEL, visible=False, y_lim=[0, None],
                      x_label_angle=-45, height=220, elem_id="weights")
    return dict(chatbot=chatbot, question=question, send=send, stop=stop, regenerate=regenerate, clear=clear,
                plot=plot)


def _compare_tab(chat: "VideoChat", config: AppConfig) -> dict[str, Any]:
    question = gr.Textbox(label="Question for both", placeholder="Ask once, answered two ways",
                          elem_id="compare-question")
    sides = []
    with gr.Row():
        for name, temporal in (("A", config.temporal), ("B", "mean" if config.temporal != "mean" else "stan")):
            with gr.Column():
                mode = gr.Radio(list(TEMPORAL_MODES), value=temporal, label=f"{name}: temporal mode")
                frames = _frame_slider(chat, config, f"{name}: frames")
                answer = gr.Textbox(label=f"{name}: answer", lines=6, interactive=False,
                                    elem_id=f"answer-{name.lower()}")
                sides.append((mode, frames, answer))
    with gr.Row():
        run = gr.Button("Compare", variant="primary", elem_id="compare")
        stop = gr.Button("Stop", variant="stop", elem_id="compare-stop")
    info = gr.Markdown(elem_id="compare-info")
    return dict(question=question, sides=sides, run=run, stop=stop, info=info)


def _wire(events: Events, state, controls: dict, chat_tab: dict, compare_tab: dict, strip) -> None:
    """Connect the components to `events`; every model call shares the MODEL group and takes its
    inputs as sent (the handlers clamp them)."""
    model = dict(concurrency_id=MODEL, preprocess=False)
    upload, frames, temporal, info = (controls[name] for name in ("upload", "frames", "temporal", "info"))
    chatbot, question, plot = chat_tab["chatbot"], chat_tab["question"], chat_tab["plot"]
    generation = [controls["max_new_tokens"], controls["temperature"]]
    chat_out = [state, chatbot, question, plot, info, *generation]

    upload.change(events.open, [upload, frames, temporal, state],
                  [state, frames, controls["preview"], controls["still"], strip, chatbot, plot, info],
                  **_api("load_video"), **model)
    # the frame box: a drag ends with release, and so does a typed number (Enter or leaving the box)
    for trigger, api in ((temporal.change, _api("settings")), (frames.release, _hidden())):
        trigger(events.configure, [frames, temporal, state], [state, frames, strip, chatbot, info], **api, **model)
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
                             [state, a_frames, b_frames, *generation, a_answer, b_answer, compare_tab["info"]],
                             **_api("compare"), **model)


def _api(name: str) -> dict[str, Any]:
    """An endpoint that clients (gradio_client, the tests) call by name."""
    return {"api_name": name}


def _hidden() -> dict[str, Any]:
    """A second trigger of an endpoint that already has a name."""
    return {"api_visibility": "private"}
