"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class StanchatError(Exception):
    """A problem with the user's input or environment; the message names the fix in one line.
    `param` names the option it is about (e.g. "frames"), for a front end to point at its own control."""

    def __init__(self, message: str = "", param: str | None = None):
        super().__init__(message)
        self.param = param


class VideoError(StanchatError):
    """A video that cannot be read: missing, empty, corrupt, not a video, or no frames."""


class WeightsError(StanchatError):
    """Model weights that are missing, unknown or not of the expected layout."""


class ResourceError(StanchatError):
    """The machine could not do the work, through no fault of the input: a helper process killed from
    outside (the out-of-memory killer), memory exhausted. A server reports it as its own failure (5xx)."""
