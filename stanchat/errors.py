"""Errors a user can cause, and how each front end words them.

The CLI prints them as one line and exits with code 2; the app shows them in the chat; the API
answers 400 with a JSON error. An error about an option is written once, as a function of `Words`
(how a front end names options and the advice it gives), and carries the option (`param`): the CLI
reads `str(err)` (flags), the app `err.worded(its words)` (controls), the API `err.worded(its
words)` (JSON fields). No front end rewrites another's text.
"""

from __future__ import annotations

from typing import Callable

ADVICE = {"reset": "reset the conversation"}  # what to do, as the command line says it


class Words:
    """How a front end names the options an error is about: this one, the command line's flags."""

    advice = ADVICE

    def name(self, option: str) -> str:
        """The option as this front end calls it ("frames" -> "--frames")."""
        return "--" + option.replace("_", "-")

    def set(self, option: str, value: object) -> str:
        """The advice to give `option` the value `value` ("use --frames 12")."""
        return f"use {self.name(option)} {value}"

    def also(self, option: str, value: object) -> str:
        """The same advice after an "or" ("--temporal stan")."""
        return f"{self.name(option)} {value}"


FLAGS = Words()


class StanchatError(Exception):
    """A problem with the user's input or environment; the message names the fix in one line.

    `message` is a string, or a function of `Words` for a message that names options (worded by each
    front end: `worded`); `param` names the option it is about (e.g. "frames")."""

    def __init__(self, message: str | Callable[[Words], str] = "", param: str | None = None):
        self._message = message
        super().__init__(message(FLAGS) if callable(message) else message)
        self.param = param

    def worded(self, words: Words) -> str:
        """The message in a front end's words."""
        return self._message(words) if callable(self._message) else str(self)


class VideoError(StanchatError):
    """A video that cannot be read: missing, empty, corrupt, not a video, or no frames."""


class WeightsError(StanchatError):
    """Model weights that are missing, unknown or not of the expected layout."""


class ResourceError(StanchatError):
    """The machine could not do the work, through no fault of the input: a helper process killed from
    outside (the out-of-memory killer), memory exhausted. A server reports it as its own failure (5xx)."""


class Cancelled(Exception):
    """The work was called off by its caller (a server's client hung up): nobody waits for its result.
    Not a StanchatError: it is nobody's mistake and has no message for a user."""
