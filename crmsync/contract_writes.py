"""Contract tests of ``write``: what lands, what it may touch, how failures are reported.

The suite reads the record back through the backend (not the connector) so it sees every field a write changed.
"""

from __future__ import annotations

import time

import pytest

from .connector import Bookmark
from .contract_backend import (
    EPOCH,
    ContractBackend,
    Unsupported,
    changed_fields,
    later,
    lead_inputs,
    mapped_outputs,
    order_key,
    scores,
)
from .errors import RetriableConnectorError


class WriteContract:
    """Mixed into ``ConnectorContract``; every test takes the subclass's ``backend`` fixture."""

    def test_written_lead_is_no_longer_unscored(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Acme", "title": "COO", "monthly_orders": 4200, "description": "x"})
        b = backend.add_lead({"company": "Beta", "title": "CEO", "monthly_orders": 10, "description": "y"})
        conn = backend.connector()
        outcomes = conn.write([scores(backend.fields, a, 87, review=False)])
        assert [(o.lead_id, o.ok) for o in outcomes] == [(a, True)]
        assert backend.get_output(a, "score") == 87
        assert backend.get_output(a, "needs_review") is False
        assert backend.get_output(a, "tier") == "A"
        remaining = [lead.id for lead in conn.fetch_unscored(None, 10_000)]
        assert a not in remaining and b in remaining

    def test_write_changes_only_mapped_outputs(self, backend: ContractBackend) -> None:
        conn = backend.connector()
        a = backend.add_lead(lead_inputs("Acme", 4200, "COO", "Growing fast"))
        before = backend.raw_record(a)
        assert all(o.ok for o in conn.write([scores(backend.fields, a, 91, review=True)]))
        changed = changed_fields(before, backend.raw_record(a)) - backend.system_fields
        allowed = mapped_outputs(backend.fields)
        assert backend.fields.outputs.score in changed, "raw_record must read the CRM's stored record"
        assert changed <= allowed, f"a connector writes only the mapped outputs; it also changed {sorted(changed - allowed)}"

    def test_write_moves_the_modified_time(self, backend: ContractBackend) -> None:
        a = backend.add_lead(lead_inputs("Acme"))
        b = backend.add_lead(lead_inputs("Beta"))
        conn = backend.connector()
        until = later()
        seen = {lead.id: lead for lead in conn.fetch_changed(EPOCH, until, 10_000)}
        last = max(seen.values(), key=order_key)
        mark = Bookmark(last.modified_at, last.id)  # type: ignore[arg-type]
        time.sleep(0.01)  # CRM clocks tick in milliseconds: the write lands on a later tick than the bookmark
        assert all(o.ok for o in conn.write([scores(backend.fields, a, 64)]))
        after = list(conn.fetch_changed(mark, until, 10_000))
        mine = [lead for lead in after if lead.id == a]
        assert len(mine) == 1, "a write moves the lead's modified time: the changed stream reads crmsync's own write once"
        assert mine[0].has_score and mine[0].modified_at > seen[a].modified_at  # type: ignore[operator]
        assert b not in [lead.id for lead in after], "a lead nobody wrote did not change"

    def test_write_is_idempotent(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Acme", "title": "COO", "monthly_orders": 4200, "description": "x"})
        conn = backend.connector()
        for _ in range(2):
            assert all(o.ok for o in conn.write([scores(backend.fields, a, 55, review=True)]))
        assert backend.get_output(a, "score") == 55
        assert backend.get_output(a, "needs_review") is True

    def test_one_rejected_record_does_not_block_the_rest(self, backend: ContractBackend) -> None:
        ids = [backend.add_lead({"company": f"Co {i}", "title": "CEO", "monthly_orders": i, "description": ""}) for i in range(5)]
        backend.reject_writes(ids[2], "Score cannot be set on partner leads")
        conn = backend.connector()
        outcomes = conn.write([scores(backend.fields, i, 40 + n) for n, i in enumerate(ids)])
        assert [o.lead_id for o in outcomes] == ids, "one outcome per update, in order"
        assert [o.ok for o in outcomes] == [True, True, False, True, True]
        assert "partner leads" in (outcomes[2].error or "")
        assert backend.get_output(ids[3], "score") == 43
        assert backend.get_output(ids[2], "score") is None

    def test_a_rejected_value_is_not_retryable(self, backend: ContractBackend) -> None:
        a = backend.add_lead(lead_inputs("Partner Co"))
        backend.reject_writes(a, "Score cannot be set on partner leads")
        [outcome] = backend.connector().write([scores(backend.fields, a, 50)])
        assert not outcome.ok and "partner leads" in (outcome.error or "")
        assert outcome.retryable is False, "a validation error fails the same way every time: crmsync parks it at once"

    def test_a_transient_write_failure_is_retryable(self, backend: ContractBackend) -> None:
        a = backend.add_lead(lead_inputs("Locked Co"))
        b = backend.add_lead(lead_inputs("Free Co"))
        conn = backend.connector()
        try:
            release = backend.lock_lead(a)
        except Unsupported as exc:
            pytest.skip(f"{type(conn).__name__}: {exc}")
        try:
            outcomes = conn.write([scores(backend.fields, a, 70), scores(backend.fields, b, 71)])
        except RetriableConnectorError:
            outcomes = []  # the whole call failed, retryably: nothing is assumed written
        finally:
            release()
        assert [o.lead_id for o in outcomes] in ([], [a, b]), "one outcome per update, in order"
        for o in outcomes:
            assert o.ok or o.retryable, f"a lock or an outage is not a bad value: report it retryable ({o})"
        assert all(o.ok for o in conn.write([scores(backend.fields, a, 72), scores(backend.fields, b, 73)])), "the lock is gone: it lands"
        assert backend.get_output(a, "score") == 72

    def test_deleted_record_fails_alone(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Gone", "title": "CEO", "monthly_orders": 1, "description": ""})
        b = backend.add_lead({"company": "Here", "title": "CEO", "monthly_orders": 1, "description": ""})
        backend.delete_lead(a)
        outcomes = backend.connector().write([scores(backend.fields, a, 10), scores(backend.fields, b, 11)])
        assert [o.ok for o in outcomes] == [False, True]
        assert outcomes[0].error
        assert outcomes[0].retryable is False, "a deleted record does not come back: not retryable"

    def test_many_updates_span_batches(self, backend: ContractBackend) -> None:
        ids = [backend.add_lead({"company": f"Bulk {i}", "title": "", "monthly_orders": i, "description": ""}) for i in range(230)]
        outcomes = backend.connector().write([scores(backend.fields, i, n % 101) for n, i in enumerate(ids)])
        assert len(outcomes) == 230 and all(o.ok for o in outcomes)
        assert backend.get_output(ids[229], "score") == 229 % 101
