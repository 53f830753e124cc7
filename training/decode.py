"""Placeholder until the video branch lands."""


class ClipDecoder:
    def __init__(self, frames, size, train):
        raise NotImplementedError
