"""Chat about a video, several turns, answers streaming as they are generated. Questions come
from the terminal or, one per line, from a pipe. Commands: /video PATH (switch video, new
conversation), /frames N (re-sample the video, keep the conversation), /temporal MODE (the same
frames), /reset (forget the conversation), /exit. Every video is sampled with the command's
--strategy, --fps, --start, --end and --seed."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator

from stanchat.commands._shared import (add_generation_arguments, add_model_arguments, add_sampling_arguments,
                                       check_args, generation, load_chat, video_options)
from stanchat.errors import StanchatError
from stanchat.options import check_temporal
from stanchat.video import check_source
from stanchat.video.watchdog import prestart

logger = logging.getLogger(__name__)

HELP = "/video PATH  /frames N  /temporal MODE  /reset  /help  /exit"
COMMANDS = {  # shown by /help
    "/video PATH": "talk about another video, sampled the same way (a new conversation)",
    "/frames N": "re-sample N frames of this video (same --strategy/--fps/--start/--end/--seed), keeping the conversation",
    "/temporal MODE": "stan, mean or concat on the same frames, keeping the conversation",
    "/reset": "forget the conversation, keep the video",
    "/help": "this list",
    "/exit": "leave (also Ctrl-D, or Ctrl-C at the prompt); Ctrl-C during an answer stops only the answer",
}
HISTORY_FILE = "chat_history"  # under $STANCHAT_HOME: questions typed at the prompt, for the arrow keys
HISTORY_LENGTH = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="path of the video file")
    add_generation_arguments(parser)
    add_sampling_arguments(parser)
    add_model_arguments(parser)


def _lines(interactive: bool) -> Iterator[str]:
    """Questions and commands: prompted on a terminal, one per line from a pipe."""
    if not interactive:
        yield from sys.stdin
        return
    _line_editing()
    while True:
        try:
            yield input(">>> ")
        except EOFError:
            print()
            return


def _line_editing() -> None:
    """Arrow keys and a question history kept across chats, where Python has readline."""
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline: input() still works, without editing
        logger.debug("no readline: no line editing or history")
        return
    import atexit

    from stanchat.pretrained import stanchat_home

    path = os.path.join(stanchat_home(), HISTORY_FILE)
    try:
        readline.read_history_file(path)
    except OSError:  # no history yet (or unreadable): start empty
        pass
    readline.set_history_length(HISTORY_LENGTH)

    def save() -> None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            readline.write_history_file(path)
        except OSError as err:
            logger.debug("chat history not saved: %s", err)

    atexit.register(save)


def _command(chat, session, line: str, args: argparse.Namespace):
    """Apply a /command; returns the (possibly new) session, or None to end the chat. A video is
    sampled with the conversation's options (--strategy, --fps, --start, --end, --seed) every time."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/exit", "/quit"):
        return None
    if name == "/help":
        print("\n".join(f"  {usage:<16} {what}" for usage, what in COMMANDS.items()))
        return session
    if name == "/reset":
        session.reset()
        return session
    if name == "/video" and arg:
        return chat.session(check_source(arg), **_options(session, args).__dict__)
    if name == "/frames" and arg:
        if not arg.isdigit():
            raise StanchatError(f"/frames takes a whole number, got {arg!r}")
        options = _options(session, args, frames=int(arg))
        return chat.session(session.video.path, history=session.history, **options.__dict__)
    if name == "/temporal" and arg:  # the same frames (or candidates), encoded the other way: nothing is decoded again
        temporal = check_temporal(arg)
        if session.options.select == "question":
            options = _options(session, args, temporal=temporal)
            return chat.session(session.video.path, history=session.history, **options.__dict__)
        return chat.session(session.video, session.frames, temporal, session.history, segments=args.segments)
    raise StanchatError(f"unknown command {line!r}; commands: {HELP}")


def _options(session, args: argparse.Namespace, **changes):
    """The conversation's video options: the command's sampling flags, the session's frames and mode."""
    return video_options(args, **{"frames": session.frames, "temporal": session.temporal, **changes})


def _status(session) -> str:
    return (f"[{session.video.path}: {session.frames} frames, {session.video_tokens} video tokens, "
            f"temporal {session.temporal}]")


def _answer(session, question: str, generation: dict) -> None:
    """Print a streamed answer. Ctrl-C stops this answer (no turn is recorded), not the conversation,
    also before the first token, while the prompt prefills."""
    stream, printed = None, False
    try:
        stream = session.stream(question, **generation)
        for piece in stream:
            print(piece, end="", flush=True)
            printed = True
    except KeyboardInterrupt:
        if stream is not None:
            stream.close()  # stops generation now rather than when the stream is collected
        if printed:
            print(flush=True)  # end the cut answer's line
        print("[answer stopped; ask again, or Ctrl-D to leave]", file=sys.stderr)
        return
    print()


def run(args: argparse.Namespace) -> int:
    check_args(args)
    prestart()  # the decode worker starts, and imports torch for the fit, while the model loads
    chat = load_chat(args)
    session = chat.session(args.video, **video_options(args).__dict__)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"{_status(session)}  {HELP}")
    failed = False
    for line in _lines(interactive):
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                try:
                    session = _command(chat, session, line, args)
                except KeyboardInterrupt:  # while a video decodes or encodes: keep the conversation we had
                    print(f"[stopped; still {_status(session)[1:]}", file=sys.stderr)
                    continue
                if session is None:
                    break
                if interactive:
                    print(_status(session))
                continue
            _answer(session, line, generation(args))
        except StanchatError as err:  # a bad command or question ends nothing: say so, read on
            logger.debug("command failed", exc_info=True)
            print(f"stanchat: error: {err}", file=sys.stderr)
            failed = True
    return 2 if failed and not interactive else 0
