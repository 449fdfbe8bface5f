"""The one TOML config file, validated by pydantic. Every error names the file, the key and what is expected.

``Config()`` with no file is the embedded default: the local SQLite CRM seeded with the bundled sample leads,
scored by the local llama.cpp model. No account, no key, no network.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

# re-exported: the rest of crmsync imports these from crmsync.config
from .config_errors import format_validation_error
from .config_fields import DEFAULT_INPUTS, REQUIRED_OUTPUTS, FieldsConfig, OutputFields, PriceConfig, _Strict  # noqa: F401
from .config_providers import ProviderTable
from .errors import ConfigError
from .learning.settings import LearnConfig
from .providers.options import ProviderOptions  # noqa: F401
from .support import register_secret


class ChainStep(_Strict):
    provider: str = Field(description="a name under [providers]")
    escalate_below: float | None = Field(None, ge=0, le=1, description="if this step's confidence is under this, the next step scores too")
    batch: Literal["never", "auto", "always"] = Field(
        "never",
        description='through the provider\'s batch API (about half price, results within 24 h): "auto" when at '
        'least [scoring] batch_min_leads are waiting, "always", or "never"',
    )


class ReviewConfig(_Strict):
    confidence_below: float = Field(0.6, ge=0, le=1, description="final confidence under this → needs review")
    max_score_gap: int = Field(15, ge=0, le=100, description="escalated steps further apart than this → needs review")
    # Issue 15: with a promoted calibration, flag on the calibrated P(qualified) instead of the raw confidence.
    probability_band: tuple[float, float] | None = Field(
        None, description="[low, high]: a calibrated P(qualified) inside it → needs review (replaces confidence_below)"
    )

    @field_validator("probability_band")
    @classmethod
    def _band(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 <= v[0] <= v[1] <= 1:
            raise ValueError("give [low, high] with 0 <= low <= high <= 1, e.g. [0.3, 0.7]")
        return v


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
        2000,
        ge=100,
        le=1_000_000,
        description=(
            "each input value is cut to this many characters before it reaches a model (a pasted novel cannot run up the bill); "
            "the prompt marks the cut"
        ),
    )
    batch_min_leads: int = Field(
        100, ge=1, description='a chain step with batch = "auto" batches when at least this many leads wait; fewer are scored at once'
    )
    batch_poll_s: float = Field(60.0, ge=0, description="`crmsync score --batch`: seconds between polls of an outstanding batch")


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
    provider: str | None = Field(
        None, description="a name under [providers] asked whether the lead's text addresses an AI (top tier only); none: patterns only"
    )
    patterns_file: str | None = Field(None, description="more instruction patterns, added to the bundled ones; re-read when it changes")
    key_inputs: list[str] = Field(
        default_factory=lambda: ["monthly_orders"],
        description="a top-tier lead with one of these inputs missing (or listed by the model as missing or contradictory) is flagged",
    )
    fit: dict[str, FitRange] = Field(
        default_factory=lambda: {"monthly_orders": FitRange(min=1000)},
        description="input → { min, max } a top-tier lead's number must lie in; outside, or not a number → flagged",
    )


class CrmConfig(_Strict):
    type: str = Field("sqlite", description="connector name: sqlite, salesforce, hubspot, or a plugin's")
    options: dict[str, Any] = Field(default_factory=dict, description="the connector's own settings")


class RubricConfig(_Strict):
    path: str | None = Field(None, description="the prompt file; default: the bundled prompts/lead_score.md")


class DaemonConfig(_Strict):
    interval_s: int = Field(300, ge=10, description="seconds between polls (many CRMs want ≥ 300)")
    fetch_limit: int = Field(500, ge=1, description="unscored leads taken per cycle (the backlog drains fetch_limit per cycle)")
    changed_limit: int = Field(2000, ge=1, description="changed leads read per cycle (edits, other integrations, reviews)")
    changed_lag_s: float = Field(
        60.0, ge=0, le=3600, description="changes younger than this wait for the next cycle (search-index lag, clock skew)"
    )
    recheck_before_write: bool = Field(
        True, description="re-read review decisions just before each write, so a reviewer who decides mid-cycle wins"
    )
    write_flush_s: float = Field(30.0, gt=0, description="write what has been scored at least this often, even below a full batch")
    max_write_attempts: int = Field(
        5, ge=1, description="a write the CRM refuses for now (a locked row) is sent this often per cycle, then next cycle; never parked"
    )
    state_dir: str = Field("crmsync-data", description="where the ledger (and the local CRM) live")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve Prometheus metrics on this port (pip install 'crmsync[metrics]')"
    )
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
    return {"local": {"type": "llamacpp"}}  # validated like a file's table (validate_default)


class Config(_Strict):
    crm: CrmConfig = Field(default_factory=CrmConfig)
    fields: FieldsConfig = Field(default_factory=FieldsConfig)
    rubric: RubricConfig = Field(default_factory=RubricConfig)
    # name → that type's Options, found through the crmsync.providers entry points (config_providers.py)
    providers: dict[str, ProviderTable] = Field(default_factory=_default_providers, validate_default=True)
    chain: list[ChainStep] = Field(default_factory=lambda: [ChainStep(provider="local")], min_length=1)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    cooldown: CooldownConfig = Field(default_factory=CooldownConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    learn: LearnConfig = Field(default_factory=LearnConfig)  # `crmsync train` guardrails and the drift alarm (issue 15)

    # Where relative paths are resolved: the config file's folder (the cwd for the embedded default).
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    source: str = Field("(embedded default)", exclude=True)

    @model_validator(mode="after")
    def _chain_names_exist(self) -> Config:
        for i, step in enumerate(self.chain):
            if step.provider not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none"
                raise ValueError(f"chain[{i}].provider = {step.provider!r} is not a provider under [providers] (known: {known})")
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


class SecretMissing(ConfigError):
    """``require_env`` failed: ``var`` is unset, blank or not ASCII (so `crmsync check` can name the key to set)."""

    def __init__(self, message: str, var: str) -> None:
        super().__init__(message)
        self.var = var


def require_env(var: str, who: str) -> str:
    """Read a secret from the environment and register it for masking (crmsync.support). A missing one, or one
    with a non-ASCII character (a curly quote or a non-breaking space picked up when pasting; HTTP headers
    cannot carry it), is a startup error (``SecretMissing``) naming the variable, never the value."""
    value = os.environ.get(var, "")
    if not value.strip():
        raise SecretMissing(
            f"{who}: environment variable {var} is not set. It holds the secret; put it in the service's "
            f"environment file (see deploy/crmsync.env.example), never in the config file.",
            var,
        )
    register_secret(value)
    if not value.isascii():
        pos, char = next((i, c) for i, c in enumerate(value, 1) if not c.isascii())
        raise SecretMissing(
            f"{who}: environment variable {var} contains a non-ASCII character (U+{ord(char):04X} at position "
            f"{pos} of {len(value)}); paste the key again",
            var,
        )
    return value
