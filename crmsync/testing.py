"""A contract test suite every connector runs, built-in or third-party.

Subclass ``ConnectorContract`` in a test module and provide the ``backend`` fixture: an object that
satisfies ``ContractBackend`` against your CRM (or a local emulator of it) and builds your connector.
pytest then runs every ``test_*`` below against it::

    class TestPipedrive(ConnectorContract):
        @pytest.fixture
        def backend(self, pipedrive_emulator):
            return PipedriveBackend(pipedrive_emulator)
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import pytest

from .config import FieldsConfig
from .connector import Bookmark, Connector, ScoreUpdate, output_values

#: The contract's standard input mapping: scorer input name → CRM field, as the backend names fields.
CONTRACT_INPUTS = ("company", "title", "monthly_orders", "description")


class ContractBackend(Protocol):
    """Drives one CRM (or its emulator) for the contract suite."""

    fields: FieldsConfig  # the mapping the connector under test is built with

    def connector(self) -> Connector:
        """A connector configured against this backend."""

    def add_lead(self, inputs: dict[str, Any]) -> str:
        """Create a lead with these scorer inputs (keys from ``CONTRACT_INPUTS``); return its id."""

    def get_output(self, lead_id: str, output: str) -> Any:
        """Read an output field (``score``, ``needs_review``, ...) of a lead as the CRM stores it, normalised
        to Python: numbers as int/float, checkboxes as bool, empty as None."""

    def set_input(self, lead_id: str, name: str, value: Any) -> None:
        """Change one input field, as a person editing the lead would (bumps its modified time)."""

    def set_review_decision(self, lead_id: str, value: str) -> None:
        """A reviewer fills the configured decision field."""

    def reject_writes(self, lead_id: str, message: str) -> None:
        """Make the CRM reject any update of this lead with ``message`` (a validation rule)."""

    def delete_lead(self, lead_id: str) -> None:
        """Delete the lead (writes to it must then fail for that record only)."""


def _scores(fields: FieldsConfig, lead_id: str, score: int, review: bool = False) -> ScoreUpdate:
    return ScoreUpdate(
        lead_id,
        output_values(
            fields,
            {
                "score": score,
                "tier": "A" if score >= 80 else "C",
                "confidence": 0.75,
                "needs_review": review,
                "reasons": "High stated order volume; decision maker",
                "scored_at": datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc),
                "rubric_version": "abcdef123456",
                "model": "test/model",
            },
        ),
    )


class ConnectorContract:
    """The tests. Each asserts behaviour crmsync relies on."""

    @pytest.fixture
    def backend(self) -> ContractBackend:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def _ids(self, conn: Connector) -> list[str]:
        return [lead.id for lead in conn.fetch_unscored(None, 10_000)]

    def test_fetch_yields_unscored_leads_with_mapped_inputs_only(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Acme Apparel", "title": "COO", "monthly_orders": 4200, "description": "Growing fast"})
        b = backend.add_lead({"company": "Beta Beauty", "title": "Founder", "monthly_orders": 900, "description": ""})
        conn = backend.connector()
        leads = {lead.id: lead for lead in conn.fetch_unscored(None, 10_000)}
        assert {a, b} <= set(leads)
        assert set(leads[a].inputs) <= set(backend.fields.inputs), "only mapped inputs may leave the CRM"
        assert leads[a].inputs["company"] == "Acme Apparel"
        assert float(leads[a].inputs["monthly_orders"]) == 4200
        assert leads[a].has_score is False

    def test_written_lead_is_no_longer_unscored(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Acme", "title": "COO", "monthly_orders": 4200, "description": "x"})
        b = backend.add_lead({"company": "Beta", "title": "CEO", "monthly_orders": 10, "description": "y"})
        conn = backend.connector()
        outcomes = conn.write([_scores(backend.fields, a, 87, review=False)])
        assert [(o.lead_id, o.ok) for o in outcomes] == [(a, True)]
        assert backend.get_output(a, "score") == 87
        assert backend.get_output(a, "needs_review") is False
        assert backend.get_output(a, "tier") == "A"
        remaining = self._ids(conn)
        assert a not in remaining and b in remaining

    def test_write_is_idempotent(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Acme", "title": "COO", "monthly_orders": 4200, "description": "x"})
        conn = backend.connector()
        for _ in range(2):
            assert all(o.ok for o in conn.write([_scores(backend.fields, a, 55, review=True)]))
        assert backend.get_output(a, "score") == 55
        assert backend.get_output(a, "needs_review") is True

    def test_one_rejected_record_does_not_block_the_rest(self, backend: ContractBackend) -> None:
        ids = [backend.add_lead({"company": f"Co {i}", "title": "CEO", "monthly_orders": i, "description": ""}) for i in range(5)]
        backend.reject_writes(ids[2], "Score cannot be set on partner leads")
        conn = backend.connector()
        outcomes = conn.write([_scores(backend.fields, i, 40 + n) for n, i in enumerate(ids)])
        assert [o.lead_id for o in outcomes] == ids, "one outcome per update, in order"
        assert [o.ok for o in outcomes] == [True, True, False, True, True]
        assert "partner leads" in (outcomes[2].error or "")
        assert backend.get_output(ids[3], "score") == 43
        assert backend.get_output(ids[2], "score") is None

    def test_deleted_record_fails_alone(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Gone", "title": "CEO", "monthly_orders": 1, "description": ""})
        b = backend.add_lead({"company": "Here", "title": "CEO", "monthly_orders": 1, "description": ""})
        backend.delete_lead(a)
        outcomes = backend.connector().write([_scores(backend.fields, a, 10), _scores(backend.fields, b, 11)])
        assert [o.ok for o in outcomes] == [False, True]
        assert outcomes[0].error

    def test_many_updates_span_batches(self, backend: ContractBackend) -> None:
        ids = [backend.add_lead({"company": f"Bulk {i}", "title": "", "monthly_orders": i, "description": ""}) for i in range(230)]
        outcomes = backend.connector().write([_scores(backend.fields, i, n % 101) for n, i in enumerate(ids)])
        assert len(outcomes) == 230 and all(o.ok for o in outcomes)
        assert backend.get_output(ids[229], "score") == 229 % 101

    def test_unscored_stream_resumes_after_an_id(self, backend: ContractBackend) -> None:
        ids = [backend.add_lead({"company": f"K{i}", "title": "", "monthly_orders": i, "description": ""}) for i in range(5)]
        conn = backend.connector()
        first = [lead.id for lead in conn.fetch_unscored(None, 2)]
        rest = [lead.id for lead in conn.fetch_unscored(first[-1], 10_000)]
        assert len(first) == 2 and first == sorted(first), "ascending ids, at most the limit"
        assert not set(first) & set(rest), "a keyset page never repeats the previous one"
        assert set(ids) <= set(first) | set(rest), "no lead skipped"
        assert all(r > first[-1] for r in rest)

    def test_decided_lead_is_not_unscored(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Acme", "title": "COO", "monthly_orders": 100, "description": ""})
        b = backend.add_lead({"company": "Beta", "title": "CEO", "monthly_orders": 100, "description": ""})
        backend.set_review_decision(a, "qualified")
        ids = self._ids(backend.connector())
        assert a not in ids and b in ids

    def test_changed_stream_yields_each_change_once_in_order(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Acme", "title": "COO", "monthly_orders": 100, "description": ""})
        conn = backend.connector()
        conn.write([_scores(backend.fields, a, 30)])
        start = Bookmark(datetime.now(timezone.utc) - timedelta(days=1))
        until = datetime.now(timezone.utc) + timedelta(hours=1)
        backend.set_input(a, "monthly_orders", 20000)
        leads = list(conn.fetch_changed(start, until, 10_000))
        mine = [lead for lead in leads if lead.id == a]
        assert len(mine) == 1, "one change, one read"
        assert float(mine[0].inputs["monthly_orders"]) == 20000
        assert mine[0].has_score is True and mine[0].modified_at is not None
        last = max(leads, key=lambda lead: (lead.modified_at, lead.id))
        assert list(conn.fetch_changed(Bookmark(last.modified_at, last.id), until, 10_000)) == [], "strictly after the bookmark"  # type: ignore[arg-type]

    def test_a_partial_changed_read_takes_the_earliest_changes(self, backend: ContractBackend) -> None:
        ids = [backend.add_lead({"company": f"P{i}", "title": "", "monthly_orders": i, "description": ""}) for i in range(3)]
        conn = backend.connector()
        start = Bookmark(datetime.now(timezone.utc) - timedelta(days=1))
        until = datetime.now(timezone.utc) + timedelta(hours=1)
        for rid in reversed(ids):  # modified in the order 2, 1, 0
            backend.set_input(rid, "monthly_orders", 500)
        every = list(conn.fetch_changed(start, until, 10_000))
        order = [lead.id for lead in sorted(every, key=lambda lead: (lead.modified_at, lead.id))]
        got = list(conn.fetch_changed(start, until, 2))
        assert [lead.id for lead in got] == order[:2], "a cut read is in (modified time, id) order, earliest first"
        mark = Bookmark(got[-1].modified_at, got[-1].id)  # type: ignore[arg-type]
        assert [lead.id for lead in conn.fetch_changed(mark, until, 10_000)] == order[2:], "and the rest follows once"

    def test_changed_stream_stops_at_until(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Acme", "title": "COO", "monthly_orders": 100, "description": ""})
        start = Bookmark(datetime.now(timezone.utc) - timedelta(days=1))
        leads = backend.connector().fetch_changed(start, datetime.now(timezone.utc) - timedelta(hours=12), 10_000)
        assert a not in [lead.id for lead in leads]

    def test_review_decision_is_reported(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Acme", "title": "COO", "monthly_orders": 100, "description": ""})
        b = backend.add_lead({"company": "Beta", "title": "COO", "monthly_orders": 100, "description": ""})
        backend.set_review_decision(a, "qualified")
        conn = backend.connector()
        assert conn.read_decisions([a, b]) == {a: "qualified", b: None}
        assert {lead.id: lead.review_decision for lead in conn.fetch_ids([a, b])} == {a: "qualified", b: None}

    def test_limit_is_respected(self, backend: ContractBackend) -> None:
        for i in range(7):
            backend.add_lead({"company": f"L{i}", "title": "", "monthly_orders": i, "description": ""})
        assert len(list(backend.connector().fetch_unscored(None, 3))) == 3

    def test_check_passes_on_a_good_setup(self, backend: ContractBackend) -> None:
        problems = [p for p in backend.connector().check() if p.severity == "error"]
        assert problems == [], problems
