"""Messages in the app's words: the control a user can set, where the command line names a flag.

stanchat's checks raise one line worded for the command line ("use --frames 12 or fewer", "reset the
conversation"): `options.check_frames`, `session.check_context`, the graft, the decode worker. In the
app there are no flags, only controls, so every message the app shows passes through `for_the_app`.
The app clamps what its own controls send (`clamp`), so most of these never arise; the context check
does, since only the model can count a prompt.
"""

from __future__ import annotations

import re

# flag -> the control that sets the same value (their labels in stanchat.app.ui)
CONTROLS = {
    "--frames": "Frames sampled",
    "--temporal": "Temporal mode",
    "--max-new-tokens": "Max new tokens",
    "--temperature": "Temperature",
}
# command-line advice with no flag to rename -> what to do in the app
ADVICE = {
    "reset the conversation": "press Clear",
    "run with --debug to see its output": "the server shows its output when started with --debug",
}
_SET = re.compile(r"\b(use|or) (--[a-z-]+) (\w+)")  # "use --frames 12", "or --temporal stan"


def for_the_app(text: str) -> str:
    """`text` with each flag the app has a control for named as that control."""
    for cli, app in ADVICE.items():
        text = text.replace(cli, app)
    text = _SET.sub(_set_control, text)
    return re.sub(r"--[a-z-]+", lambda m: CONTROLS.get(m[0], m[0]), text)


def _set_control(match: re.Match) -> str:
    verb, flag, value = match.groups()
    if flag not in CONTROLS:
        return match[0]
    return f"{'set' if verb == 'use' else 'or'} {CONTROLS[flag]} to {value}"


def clamp(value: float, low: float, high: float, control: str, why: str = "") -> tuple[float, str]:
    """`value` brought into [low, high], and a line saying what was used instead ('' when it fit).
    `why` says where the maximum comes from."""
    if value > high:
        reason = f" ({why})" if why else ""
        return high, f"{control}: {value:g} is more than the maximum, {high:g}{reason}; {high:g} is used."
    if value < low:
        return low, f"{control}: {value:g} is less than the minimum, {low:g}; {low:g} is used."
    return value, ""
