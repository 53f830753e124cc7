"""Token ids -> answer text pieces, ending at a stop string: one tracker per answer, for every engine."""

from __future__ import annotations

from typing import Callable


class TextTracker:
    """Turns a growing list of token ids into answer text pieces, ending at a stop string.

    `add(token)` returns True once the answer is over (a stop string appeared). The text handed
    to `on_text` never includes a stop string nor a prefix of one that might still complete, and
    `"".join(pieces) == result.text` with surrounding whitespace stripped.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: tuple[str, ...],
                 on_text: Callable[[str], None] | None):
        self.decode = decode
        self.stop = stop
        self.on_text = on_text
        self.ids: list[int] = []
        self.text = ""  # the answer so far, stop string cut off
        self.sent = 0  # characters of the stripped answer given to on_text
        self.stopped = False

    def add(self, token: int) -> bool:
        self.ids.append(token)
        text = self.decode(self.ids)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return True
        self.text = text
        hold = max((len(s) - 1 for s in self.stop), default=0)  # a stop string may be starting
        self._emit(text[:len(text) - hold] if hold else text, final=False)
        return False

    def finish(self) -> str:
        """The whole answer (stripped); sends what was held back."""
        self._emit(self.text, final=True)
        return self.text.strip()

    def _emit(self, text: str, final: bool) -> None:
        # trailing whitespace (and a half-decoded character) waits for more text
        body = text.strip() if final else text.strip().rstrip("\ufffd")
        if self.on_text is not None and len(body) > self.sent:
            self.on_text(body[self.sent:])
        self.sent = max(self.sent, len(body))
