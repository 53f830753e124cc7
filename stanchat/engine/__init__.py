"""The one engine below every front end: a question becomes a `Job`, an engine answers it.

- `prompt`: the prompt of a question and its history (the processor's chat template, the video as
  one placeholder), the context check, and `make_job`.
- `base`: `Sampling` (checked when made), `Job`, `Result`, the `Engine` interface.
- `text`: answer text pieces as tokens arrive, stop strings.
- `hf`: the transformers engine: batched `generate`, the one way video tokens enter the LLM
  (`inputs_embeds` with the placeholder rows replaced), streaming and cancellation per job.
- `vllm`, `vllm_export`: the same interface on vLLM.
- `registry`: engine names -> engines.

`Session`, `ask_many`/`ask --batch`, the API and the app all answer through `VideoChat.engine`;
nothing here knows which door a request came by. Light at import: torch loads with an engine.
"""

from stanchat.engine.base import Engine, Job, Result, Sampling
from stanchat.engine.registry import ENGINE_NAMES, create_engine

__all__ = ["ENGINE_NAMES", "Engine", "Job", "Result", "Sampling", "create_engine"]
