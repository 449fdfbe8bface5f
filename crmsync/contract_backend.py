"""What the connector contract suite (``crmsync.testing.ConnectorContract``) drives: the CRM behind a connector.

A connector's test module gives the suite a ``backend``: an object that reaches the CRM (or its local emulator)
*directly*, not through the connector, so the suite can see what the connector really did (which fields a write
changed, whether the modified time moved) and set up what a person would (a decision, a conversion, a lock).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .config import FieldsConfig
from .connector import Bookmark, Connector, ScoreUpdate, output_values

#: The contract's standard input mapping: scorer input name → CRM field, as the backend names fields.
CONTRACT_INPUTS = ("company", "title", "monthly_orders", "description")
#: A bookmark before every lead a test makes (each test starts from an empty CRM).
EPOCH = Bookmark(datetime(2000, 1, 1, tzinfo=UTC))


class Unsupported(Exception):
    """Raised by a backend hook when the CRM has no such thing (say, no per-record lock error). The message is the
    reason, shown as the skip text of the one check that needs it; every other check still runs."""


class ContractBackend(Protocol):
    """Drives one CRM (or its emulator) for the contract suite. Each test gets a fresh, empty CRM."""

    fields: FieldsConfig  # the mapping the connector under test is built with
    #: fields the CRM itself changes on every write (modified time, system stamps): besides the mapped outputs,
    #: the only fields a write may change
    system_fields: frozenset[str]
    #: a valid field name this CRM does not have (for ``check()`` and ``create_fields()``)
    missing_field: str

    def connector(self, fields: FieldsConfig | None = None) -> Connector:
        """A connector configured against this backend, with ``fields`` (default: ``self.fields``)."""

    def add_lead(self, inputs: dict[str, Any]) -> str:
        """Create a lead with these scorer inputs (keys from ``CONTRACT_INPUTS``); return its id. The CRM gives
        ids out in ascending order (the order ``fetch_unscored`` reads them)."""

    def get_output(self, lead_id: str, output: str) -> Any:
        """Read an output field (``score``, ``needs_review``, ...) of a lead as the CRM stores it, normalised
        to Python: numbers as int/float, checkboxes as bool, empty as None."""

    def raw_record(self, lead_id: str) -> dict[str, Any]:
        """Every field of the lead as the CRM stores it, read directly (the database, the emulator's store)."""

    def set_input(self, lead_id: str, name: str, value: Any) -> None:
        """Change one input field, as a person editing the lead would (bumps its modified time)."""

    def set_review_decision(self, lead_id: str, value: str) -> None:
        """A reviewer fills the configured decision field."""

    def reject_writes(self, lead_id: str, message: str) -> None:
        """Make the CRM reject any update of this lead with ``message`` (a validation rule: final)."""

    def lock_lead(self, lead_id: str) -> Callable[[], None]:
        """Make the CRM refuse updates of this lead with a transient error (a locked row, a busy server): one
        that trying again later cures. Return a callable that lifts it. Raise ``Unsupported`` if it cannot."""

    def delete_lead(self, lead_id: str) -> None:
        """Delete the lead (writes to it must then fail for that record only)."""

    def mark_converted(self, lead_id: str) -> None:
        """The lead converted (won): a 'qualified' label. Raise ``Unsupported`` if the CRM has no conversion."""

    def mark_disqualified(self, lead_id: str) -> None:
        """The lead was disqualified (lost): an 'unqualified' label. Raise ``Unsupported`` if the CRM has none."""


def later() -> datetime:
    """An ``until`` past every change a test makes."""
    return datetime.now(UTC) + timedelta(hours=1)


def lead_inputs(company: str, orders: int = 100, title: str = "CEO", description: str = "") -> dict[str, Any]:
    return {"company": company, "title": title, "monthly_orders": orders, "description": description}


def scores(fields: FieldsConfig, lead_id: str, score: int, review: bool = False, **extra: Any) -> ScoreUpdate:
    """A full write of every mapped output, as crmsync makes it."""
    values = {
        "score": score,
        "tier": "A" if score >= 80 else "C",
        "confidence": 0.75,
        "needs_review": review,
        "reasons": "High stated order volume; decision maker",
        "scored_at": datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
        "rubric_version": "abcdef123456",
        "model": "test/model",
        **extra,
    }
    return ScoreUpdate(lead_id, output_values(fields, values))


def mapped_outputs(fields: FieldsConfig) -> set[str]:
    """The CRM fields a write may set: the mapped outputs (never inputs, the decision, owner, status...)."""
    return {api for api in fields.outputs.model_dump().values() if api}


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    missing = object()  # a field that appeared or vanished counts as changed
    return {k for k in before.keys() | after.keys() if before.get(k, missing) != after.get(k, missing)}


def order_key(lead: Any) -> tuple[datetime, str]:
    """The changed stream's order: (modified time, id)."""
    return (lead.modified_at, lead.id)
