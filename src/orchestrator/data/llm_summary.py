"""Optional LLM-written focused summaries through an OpenAI-compatible ``/v1/chat/completions``.

The rule-based ``captions.summarise`` needs no service; this client lets a run ask a language model
for a more fluent summary instead (the GQA-Captions pipeline used one). Standard library only
(urllib), so nothing is installed for it.

Length: the model is asked to stay within the budget, and its answer is then checked with the
same token counter as ``summarise``. With ``on_overflow="shorten"`` (default) an overlong answer
loses trailing sentences, and if its first sentence alone is too long, trailing words — never part
of a word. With ``on_overflow="error"`` it raises ``LLMError`` instead.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from .captions import Focus, TokenCounter, approx_token_count, fit_text, rank_facts
from .scene_graph import SceneGraph


class LLMError(RuntimeError):
    """The service could not be reached or gave an unusable answer (message says which)."""


@dataclass(frozen=True)
class LLMConfig:
    url: str  # base URL ("http://host:8000", ".../v1") or the full ".../chat/completions" endpoint
    model: str
    api_key: str | None = None
    timeout_s: float = 30.0
    temperature: float = 0.0
    max_response_tokens: int = 256
    retries: int = 2  # extra attempts after a connection error, HTTP 429 or 5xx
    backoff_s: float = 0.5

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "LLMConfig":
        """ORCH_LLM_URL and ORCH_LLM_MODEL (required), ORCH_LLM_API_KEY, ORCH_LLM_TIMEOUT."""
        missing = [k for k in ("ORCH_LLM_URL", "ORCH_LLM_MODEL") if not env.get(k)]
        if missing:
            raise LLMError(f"LLM summaries need {' and '.join(missing)} set")
        return cls(url=env["ORCH_LLM_URL"], model=env["ORCH_LLM_MODEL"], api_key=env.get("ORCH_LLM_API_KEY"),
                   timeout_s=float(env.get("ORCH_LLM_TIMEOUT", "30")))

    def endpoint(self) -> str:
        url = self.url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise LLMError(f"LLM url must start with http:// or https://, got {self.url!r}")
        if url.endswith("/chat/completions"):
            return url
        return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


def _post(config: LLMConfig, payload: dict[str, Any]) -> dict[str, Any]:
    endpoint = config.endpoint()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    body = json.dumps(payload).encode("utf-8")
    for attempt in range(config.retries + 1):
        retry_reason = ""
        try:
            req = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=config.timeout_s) as resp:
                raw = resp.read()
            break
        except urllib.error.HTTPError as e:
            detail = e.read(500).decode("utf-8", "replace").strip()
            if e.code == 429 or e.code >= 500:
                retry_reason = f"HTTP {e.code}: {detail}"
            else:
                raise LLMError(f"{endpoint} answered HTTP {e.code}: {detail}") from e
        except (TimeoutError, socket.timeout) as e:
            raise LLMError(f"{endpoint} did not answer within {config.timeout_s:g}s") from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                raise LLMError(f"{endpoint} did not answer within {config.timeout_s:g}s") from e
            retry_reason = f"cannot reach it: {e.reason}"
        if attempt == config.retries:
            raise LLMError(f"{endpoint} failed after {attempt + 1} attempt(s), last {retry_reason}")
        time.sleep(config.backoff_s * 2 ** attempt)
    try:
        return json.loads(raw)
    except ValueError as e:
        raise LLMError(f"{endpoint} answered with non-JSON: {raw[:200]!r}") from e


def chat(config: LLMConfig, messages: list[dict[str, str]]) -> str:
    """One chat completion; returns the first choice's text."""
    data = _post(config, {"model": config.model, "messages": messages, "temperature": config.temperature,
                          "max_tokens": config.max_response_tokens})
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise LLMError(f"unexpected chat-completions answer: {json.dumps(data)[:300]}") from e
    if not isinstance(content, str) or not content.strip():
        raise LLMError("the model returned an empty summary")
    return content.strip()


def build_messages(sg: SceneGraph, focus: Focus | None, max_tokens: int) -> list[dict[str, str]]:
    """The prompt: the graph's facts (most relevant first) and the focus, with the length budget."""
    facts = " ".join(f.text for f in rank_facts(sg, focus))
    words = max(1, int(max_tokens * 0.7))  # ~1.3 CLIP tokens per English word, plus start/end
    focus_line = ("" if focus is None else
                  f"Focus on a {focus.question_type} question about: {', '.join(focus.objects) or 'the scene'}.\n")
    return [
        {"role": "system", "content": "You write short, literal image descriptions for a text-to-image model. "
                                      "Answer with the description only: no preamble, no lists."},
        {"role": "user", "content": f"{focus_line}Describe the image in at most {words} words, keeping the "
                                    f"facts that matter most for the focus.\nFacts: {facts}"},
    ]


def llm_summarise(sg: SceneGraph, focus: Focus | None, config: LLMConfig, max_tokens: int = 77,
                  token_count: TokenCounter | None = None,
                  on_overflow: Literal["shorten", "error"] = "shorten") -> str:
    """A model-written summary held to the same budget as ``captions.summarise``."""
    count = token_count or approx_token_count
    text = " ".join(chat(config, build_messages(sg, focus, max_tokens)).split())
    if count(text) <= max_tokens:
        return text
    if on_overflow == "error":
        raise LLMError(f"the model's summary has {count(text)} tokens, over the limit of {max_tokens}")
    short = fit_text(text, max_tokens, count)
    if not short:
        raise LLMError(f"no word of the model's summary fits within {max_tokens} tokens")
    return short
