"""Judge models for open-ended video QA: the user names one, or there is none.

A judge reads (question, reference answer, predicted answer) and says yes or no. Two kinds:
- `LocalJudge`: a transformers causal LM in a local directory (`--judge-model DIR`), greedy.
- `HTTPJudge`: an OpenAI-compatible chat-completions server (`--judge-url URL --judge-name NAME`),
  asked with the `openai` client at temperature 0; an API key is read from the environment variable the user names, never stored.
Each records what it is (name, version or fingerprint, prompt) in the results. There is no
default judge: without `--judge-*` options, answers are scored by string matching only.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from stanchat.errors import StanchatError

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = ("You grade answers to questions about videos. Compare the predicted answer with the correct "
                 "answer and decide whether they mean the same thing; synonyms and paraphrases count as correct.")
USER_PROMPT = ("Question: {question}\nCorrect answer: {answer}\nPredicted answer: {prediction}\n"
               "Is the predicted answer correct? Reply with one word: yes or no.")
_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_verdict(reply: str) -> bool | None:
    """The first standalone "yes"/"no" in a judge's reply as True/False; None if it has neither."""
    match = _VERDICT.search(reply)
    return None if match is None else match.group(1).lower() == "yes"


def messages(question: str, answer: str, prediction: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT.format(question=question, answer=answer, prediction=prediction)}]


class LocalJudge:
    """A local transformers causal LM (any `AutoModelForCausalLM` directory with its tokenizer).
    The directory is checked at once; the weights load at the first judgment, so the judge and
    the chat model are never in memory together."""

    def __init__(self, directory: str | Path, device: str | None = None, max_new_tokens: int = 8):
        from stanchat.eval.model import fingerprint

        self.directory = Path(directory).expanduser()
        config = self.directory / "config.json"
        if not config.is_file():
            raise StanchatError(f"--judge-model {self.directory} is not a transformers model directory (no config.json)")
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.model = self.tokenizer = None
        self.info = {"kind": "local", "name": str(self.directory.resolve()), "version": fingerprint(self.directory),
                     "model_type": json.loads(config.read_text()).get("model_type"), "system_prompt": SYSTEM_PROMPT,
                     "user_prompt": USER_PROMPT, "decoding": "greedy", "max_new_tokens": max_new_tokens}

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.directory)
        self.model = AutoModelForCausalLM.from_pretrained(self.directory).to(self.device).eval()

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def _prompt(self, question: str, answer: str, prediction: str) -> str:
        chat = messages(question, answer, prediction)
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        return f"{chat[0]['content']}\n\n{chat[1]['content']}\nAnswer:"

    def judge(self, question: str, answer: str, prediction: str) -> tuple[bool | None, str]:
        """(verdict, the judge's raw reply)."""
        import torch

        if self.model is None:
            self._load()
        inputs = self.tokenizer(self._prompt(question, answer, prediction), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         pad_token_id=self._pad_id())
        reply = self.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return parse_verdict(reply), reply.strip()


class HTTPJudge:
    """An OpenAI-compatible server: POST {url}/chat/completions with model `name`, temperature 0."""

    def __init__(self, url: str, name: str, key_env: str | None = None, timeout: float = 60.0,
                 max_tokens: int = 8):
        if not url.startswith(("http://", "https://")):
            raise StanchatError(f"--judge-url {url!r} must start with http:// or https://")
        url = url.rstrip("/")
        self.endpoint = url if url.endswith("/chat/completions") else f"{url}/chat/completions"
        self.name = name
        self.key = os.environ.get(key_env) if key_env else None
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.info = {"kind": "http", "name": name, "url": self.endpoint, "version": None,
                     "api_key_env": key_env if self.key else None, "system_prompt": SYSTEM_PROMPT,
                     "user_prompt": USER_PROMPT, "temperature": 0, "max_tokens": max_tokens}

    def judge(self, question: str, answer: str, prediction: str) -> tuple[bool | None, str]:
        reply = self._create(messages(question, answer, prediction))
        try:
            text = reply.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise StanchatError(f"judge {self.endpoint} answered without choices[0].message.content") from None
        # the server's own model name and fingerprint say which weights answered
        self.info["version"] = {"model": reply.model, "system_fingerprint": reply.system_fingerprint}
        return parse_verdict(text or ""), (text or "").strip()

    def _create(self, chat: list[dict]):
        """One chat completion through the `openai` client (no retries: a rerun resumes)."""
        try:
            import openai
        except ImportError as err:
            raise StanchatError("--judge-url needs the openai client: pip install 'stanchat[eval]'") from err
        base_url = self.endpoint[: -len("/chat/completions")]
        client = openai.OpenAI(base_url=base_url, api_key=self.key or "none", timeout=self.timeout, max_retries=0)
        try:
            return client.chat.completions.create(model=self.name, messages=chat, temperature=0,
                                                  max_tokens=self.max_tokens)
        except openai.APIStatusError as err:
            raise StanchatError(f"judge {self.endpoint} returned HTTP {err.status_code}; check --judge-url and "
                                f"--judge-name") from None
        except (openai.APIConnectionError, openai.APITimeoutError) as err:
            raise StanchatError(f"cannot reach judge {self.endpoint} ({err.__cause__ or err}); "
                                f"is the server running?") from None
        except openai.APIResponseValidationError:
            raise StanchatError(f"judge {self.endpoint} did not answer with a chat completion") from None


def make_judge(model_dir: str | None, url: str | None, name: str | None, key_env: str | None,
               device: str | None = None):
    """The judge the user asked for, or None. Exactly one of a local directory or a URL + name."""
    if model_dir and url:
        raise StanchatError("pass either --judge-model DIR or --judge-url URL --judge-name NAME, not both")
    if url:
        if not name:
            raise StanchatError("--judge-url needs --judge-name (the model name the server serves)")
        return HTTPJudge(url, name, key_env)
    if name:
        raise StanchatError("--judge-name goes with --judge-url; for a local judge pass --judge-model DIR")
    return LocalJudge(model_dir, device) if model_dir else None
