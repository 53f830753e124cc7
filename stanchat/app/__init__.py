"""The browser chat app behind `stanchat serve` (Gradio; `pip install 'stanchat[demo]'`).

    config        AppConfig: the UI's initial values and the server's limits (light, no gradio)
    conversation  one browser tab's chat about one video, and what each button does (no gradio)
    wording       library messages in the app's words, and clamping a control's value (no gradio)
    files         the files a conversation leaves (upload, frame strip), removed with it (no gradio)
    memory        freed memory given back to the system after each event (no gradio)
    events        what each event does: component values in, component updates out
    ui            build_app(chat, config) -> gr.Blocks: layout and event wiring
    server        launch(app, config, ...) or mount(parent, chat, config, path): the same protections

The app lives in the package, not in the checkout's demo/, so that a pip-installed stanchat can
serve it; demo/app.py is the checkout's entry point. Nothing here is imported by `import stanchat`.
"""
