"""The ``[learn]`` table: guardrails for `crmsync train` and the drift alarm. Kept here (not in config.py) so the
learning feature owns its settings; config.py only adds the one ``learn`` key."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LearnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    min_labels: int = Field(200, ge=10, description="labeled leads needed before `crmsync train` fits anything")
    min_positives: int = Field(30, ge=5, description="of those, qualified ones (and as many unqualified)")
    test_share: float = Field(0.3, gt=0.05, lt=0.9, description="share of labeled leads held out for the metrics")
    split: Literal["time", "stratified"] = Field("time", description="held-out split: the latest leads (time) or a stratified sample")
    leak_auc: float = Field(0.97, gt=0.5, le=1.0, description="a single input separating the outcome this well is refused as a leak")
    allow_fields: list[str] = Field(
        default_factory=list, description="inputs the leak guard's name rule would refuse, known before the outcome"
    )
    max_categories: int = Field(30, ge=2, le=500, description="one-hot columns per categorical input; rarer values are pooled")
    drift_psi_alarm: float = Field(
        0.25, gt=0, description="population stability index above which status and /metrics raise the drift flag"
    )
