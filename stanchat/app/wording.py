"""The app's words: the control a user can set, where the command line names a flag.

stanchat's errors about an option are written as functions of `stanchat.errors.Words`; the app words
them with `APP` (a control's label, "set Frames sampled to 12", "press Clear"). The app clamps what
its own controls send (`clamp`), so most of these never arise; the context check does, since only
the model can count a prompt.
"""

from __future__ import annotations

from stanchat.errors import ADVICE, StanchatError, Words

# option -> the control that sets it (their labels in stanchat.app.ui)
CONTROLS = {
    "frames": "Frames sampled",
    "temporal": "Temporal mode",
    "max_new_tokens": "Max new tokens",
    "temperature": "Temperature",
}


class AppWords(Words):
    advice = {**ADVICE, "reset": "press Clear"}

    def name(self, option: str) -> str:
        return CONTROLS.get(option, option)

    def set(self, option: str, value: object) -> str:
        return f"set {self.name(option)} to {value}"

    def also(self, option: str, value: object) -> str:
        return f"{self.name(option)} to {value}"


APP = AppWords()


def for_the_app(err: StanchatError) -> str:
    """`err`'s message in the app's words."""
    return err.worded(APP)


def clamp(value: float, low: float, high: float, control: str, why: str = "") -> tuple[float, str]:
    """`value` brought into [low, high], and a line saying what was used instead ('' when it fit).
    `why` says where the maximum comes from."""
    if value > high:
        reason = f" ({why})" if why else ""
        return high, f"{control}: {value:g} is more than the maximum, {high:g}{reason}; {high:g} is used."
    if value < low:
        return low, f"{control}: {value:g} is less than the minimum, {low:g}; {low:g} is used."
    return value, ""
