"""Batch evaluation: zero-shot retrieval, recognition, video QA, multiple choice scored by likelihood
and a time-reversal probe.

Layout: `config` (one dataclass per command), `metrics` (ranks, recalls, accuracies, dual softmax;
pure numpy), `model` (which VideoCLIP, its tokenizer, text features), `views` + `features`
(decode, sample, crop, encode, cache, shard), `retrieval`, `recognition`, `videoqa` (+ `judge`),
`reverse`, `mcq`, `report` (results JSON, Markdown, PNG with commit/date/versions). The command
line is `stanchat eval TASK` (`stanchat/commands/eval.py`); each task is also `run_<task>(config) -> dict`.
Importing this package imports nothing heavy.
"""
