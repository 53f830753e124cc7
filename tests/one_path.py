"""The questions every front end must answer alike (tests/test_one_path.py, tests/api/test_api_vllm.py).

Each case is a video (real clips from tests/data/videos and a bundled example), a question and the
options a user sets: frames, temporal mode, answer length and temperature. The reference answer is
`VideoChat.ask`'s; every other way in (the CLI, a Session, ask_many, ask --batch, the API's engines,
the app's handler) must give the same text, from the same frames and video tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.api_helpers import LEFT, ROOT, SHRINK, data_url

REAL = ROOT / "tests" / "data" / "videos"


@dataclass(frozen=True)
class Case:
    video: str
    question: str
    frames: int
    temporal: str
    max_new_tokens: int
    temperature: float = 0.0

    @property
    def options(self) -> dict:
        """The case's options as the library's keywords."""
        return {"frames": self.frames, "temporal": self.temporal, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature}

    @property
    def flags(self) -> list[str]:
        """The case's options as command-line flags."""
        return ["--frames", str(self.frames), "--temporal", self.temporal, "--max-new-tokens",
                str(self.max_new_tokens), "--temperature", str(self.temperature)]

    def api_body(self) -> dict:
        """The case as an OpenAI chat request (the video as a data URL, stanchat's fields beside)."""
        mime = "video/x-msvideo" if self.video.endswith(".avi") else "video/mp4"
        content = [{"type": "video_url", "video_url": {"url": data_url(self.video, mime)}},
                   {"type": "text", "text": self.question}]
        return {"messages": [{"role": "user", "content": content}], "max_tokens": self.max_new_tokens,
                "temperature": self.temperature, "extra_body": {"frames": self.frames, "temporal": self.temporal}}


CASES = [
    Case(str(LEFT), "What happens in this video?", 16, "stan", 24),
    Case(str(REAL / "yoga.mp4"), "What happens in this video?", 8, "mean", 6),
    Case(str(REAL / "mmaction2_test.avi"), "Which way does it move?", 4, "concat", 5),
    Case(str(LEFT), "What happens in this video?", 8, "segments", 12),  # four blocks, each after its time span
    Case(str(SHRINK), "What happens in this video?", 5, "stan", 2),  # cut short: finish_reason "length"
]


def api_answers(base: str) -> list[tuple[str, int, int]]:
    """(answer, frames, video tokens) of every case, asked of the server at `base` with the openai client."""
    from tests import api_checks as checks

    answers = []
    for case in CASES:
        body = case.api_body()
        _, completion = checks.ask(base, body.pop("messages"), **body)
        record = completion.model_extra["stanchat"]
        answers.append((completion.choices[0].message.content, record["frames"], record["video_tokens"]))
    return answers
