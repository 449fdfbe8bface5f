"""The label-harvesting rule, once for every connector: which known outcome a CRM record teaches.

A connector asks its CRM for the records that may carry an outcome (its own query language), then hands each
record's three facts to ``harvest_label``. The rule: a reviewer's decision wins; else a conversion is
"qualified"; else a lead the CRM marks lost (disqualified) is "unqualified"; else the record teaches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Outcome = Literal["qualified", "unqualified"]
#: The values a review-decision field may hold (any case); crmsync writes and reads exactly these.
DECISIONS: tuple[Outcome, ...] = ("qualified", "unqualified")


@dataclass(frozen=True)
class LabelRecord:
    """A known outcome for a lead, harvested for evaluation: a reviewer's decision or a conversion."""

    lead_id: str
    inputs: dict[str, Any]
    outcome: Outcome
    source: Literal["review", "conversion"]
    decided_at: datetime | None


def one_of(value: object, choices: Iterable[str]) -> bool:
    """``value`` is one of ``choices``, ignoring case and surrounding blanks (CRM picklists vary in case)."""
    text = str(value or "").strip().lower()
    return bool(text) and text in {c.strip().lower() for c in choices}


def harvest_label(
    lead_id: str,
    inputs: dict[str, Any],
    *,
    decision: object,
    converted: bool,
    disqualified: bool,
    modified_at: datetime | None,
    converted_at: datetime | None = None,
) -> LabelRecord | None:
    """The label a record carries, or None. ``decision`` is the review-decision field's raw value (None when
    unmapped); ``converted_at`` dates a conversion when the CRM records it (else ``modified_at``)."""
    value = str(decision or "").strip().lower()
    reviewed = next((d for d in DECISIONS if d == value), None)
    if reviewed is not None:
        return LabelRecord(lead_id, inputs, reviewed, "review", modified_at)
    if converted:
        return LabelRecord(lead_id, inputs, "qualified", "conversion", converted_at or modified_at)
    if disqualified:
        return LabelRecord(lead_id, inputs, "unqualified", "conversion", modified_at)
    return None
