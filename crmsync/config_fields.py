"""Config sections the layers under the config read (the field mapping, prices), with the strict base model.
``crmsync.config`` re-exports every name here; import them from there."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    # hide_input_in_errors: a raw ValidationError, should one ever be printed, carries no pasted secret
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class PriceConfig(_Strict):
    input: float = Field(ge=0, description="USD per 1M input tokens")
    cached_input: float | None = Field(None, ge=0, description="USD per 1M cached input tokens (default: input)")
    cache_write: float | None = Field(None, ge=0, description="USD per 1M cache-write tokens (default: input)")
    output: float = Field(ge=0, description="USD per 1M output tokens")
    as_of: date = Field(description="the day these prices were read")
    # Batch APIs (issue 14): OpenAI Batch and Anthropic Message Batches both bill about half the standard price.
    batch_discount: float = Field(0.5, gt=0, le=1, description="batch price as a share of the price above (every token kind)")
    batch_input: float | None = Field(None, ge=0, description="USD per 1M input tokens in a batch (default: input × batch_discount)")
    batch_output: float | None = Field(None, ge=0, description="USD per 1M output tokens in a batch (default: output × batch_discount)")


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
    # Calibrated P(qualified) (0–1), written when `crmsync train calibration --promote` made one. Off unless mapped.
    probability: str | None = None


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
    review_decision: str | None = Field("ai_review_decision", description="a reviewer fills this; crmsync then never overwrites that lead")

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
                    raise ValueError(
                        f"`{name}` cannot be turned off: crmsync writes a score and a needs-review flag "
                        f"to every lead it scores. Map it to a CRM field"
                    )
                continue  # its default name applies
            data[name] = None
        return data

    @model_validator(mode="after")
    def _no_overlap(self) -> FieldsConfig:
        outs = {v for v in self.outputs.model_dump().values() if v}
        clash = outs & set(self.inputs.values())
        if clash:
            raise ValueError(f"fields {sorted(clash)} are both inputs and outputs; a field is one or the other")
        if not self.inputs:
            raise ValueError("fields.inputs is empty: map at least one CRM field to send to the model")
        return self
