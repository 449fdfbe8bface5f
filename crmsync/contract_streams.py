"""Contract tests of the two read streams: ``fetch_unscored`` (by id) and ``fetch_changed`` (by modified time, id).

Order is the contract, not a nicety: crmsync resumes the unscored stream after the last id it took and moves the
changed stream's bookmark to the largest (modified time, id) it read, so a newest-first page skips leads for good.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from .connector import Bookmark, Connector
from .contract_backend import EPOCH, ContractBackend, later, lead_inputs, order_key, scores


def _ids(conn: Connector, after: str | None = None, limit: int = 10_000) -> list[str]:
    return [lead.id for lead in conn.fetch_unscored(after, limit)]


class StreamContract:
    """Mixed into ``ConnectorContract``; every test takes the subclass's ``backend`` fixture."""

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

    def test_unscored_stream_is_in_ascending_id_order(self, backend: ContractBackend) -> None:
        ids = [backend.add_lead(lead_inputs(f"Order {i}", i)) for i in range(6)]  # the CRM gives ids out ascending
        conn = backend.connector()
        every = _ids(conn)
        assert [i for i in every if i in ids] == ids, f"ascending id order, not newest first: got {every}"
        assert _ids(conn, None, 3) == every[:3], "a limited read takes the first ids, not the newest"
        assert _ids(conn, ids[1], 2) == ids[2:4], "after an id: the next ids in order, at most the limit"
        assert _ids(conn, ids[-1]) == every[every.index(ids[-1]) + 1 :], "after the last id: nothing of what came before"

    def test_unscored_stream_resumes_after_an_id(self, backend: ContractBackend) -> None:
        ids = [backend.add_lead({"company": f"K{i}", "title": "", "monthly_orders": i, "description": ""}) for i in range(5)]
        conn = backend.connector()
        first = _ids(conn, None, 2)
        rest = _ids(conn, first[-1])
        assert len(first) == 2 and first == sorted(first), "ascending ids, at most the limit"
        assert not set(first) & set(rest), "a keyset page never repeats the previous one"
        assert set(ids) <= set(first) | set(rest), "no lead skipped"
        assert all(r > first[-1] for r in rest)

    def test_decided_lead_is_not_unscored(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Acme", "title": "COO", "monthly_orders": 100, "description": ""})
        b = backend.add_lead({"company": "Beta", "title": "CEO", "monthly_orders": 100, "description": ""})
        backend.set_review_decision(a, "qualified")
        ids = _ids(backend.connector())
        assert a not in ids and b in ids

    def test_limit_is_respected(self, backend: ContractBackend) -> None:
        for i in range(7):
            backend.add_lead({"company": f"L{i}", "title": "", "monthly_orders": i, "description": ""})
        assert len(list(backend.connector().fetch_unscored(None, 3))) == 3

    def test_changed_stream_yields_each_change_once_in_order(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Acme", "title": "COO", "monthly_orders": 100, "description": ""})
        conn = backend.connector()
        conn.write([scores(backend.fields, a, 30)])
        start = Bookmark(datetime.now(UTC) - timedelta(days=1))
        until = later()
        backend.set_input(a, "monthly_orders", 20000)
        leads = list(conn.fetch_changed(start, until, 10_000))
        mine = [lead for lead in leads if lead.id == a]
        assert len(mine) == 1, "one change, one read"
        assert float(mine[0].inputs["monthly_orders"]) == 20000
        assert mine[0].has_score is True and mine[0].modified_at is not None
        last = max(leads, key=order_key)
        assert list(conn.fetch_changed(Bookmark(last.modified_at, last.id), until, 10_000)) == [], "strictly after the bookmark"  # type: ignore[arg-type]

    def test_a_partial_changed_read_takes_the_earliest_changes(self, backend: ContractBackend) -> None:
        ids = [backend.add_lead(lead_inputs(f"P{i}", i)) for i in range(4)]
        conn = backend.connector()
        until = later()
        for rid in reversed(ids):  # modified in the order 3, 2, 1, 0
            backend.set_input(rid, "monthly_orders", 500)
        every = {lead.id: lead for lead in conn.fetch_changed(EPOCH, until, 10_000)}
        assert set(ids) <= set(every), "every changed lead is read"
        stamps = [every[i].modified_at for i in reversed(ids)]
        assert None not in stamps and stamps == sorted(stamps), f"modified_at is when each lead changed: {stamps}"  # type: ignore[type-var]
        order = [lead.id for lead in sorted(every.values(), key=order_key)]
        for k in range(1, len(order)):
            got = [lead.id for lead in conn.fetch_changed(EPOCH, until, k)]
            assert got == order[:k], f"a cut read of {k} takes the earliest changes in (modified time, id) order: {got} ≠ {order[:k]}"
        walked, mark = [], EPOCH
        while page := list(conn.fetch_changed(mark, until, 2)):  # as crmsync pages: the bookmark moves to the largest read
            walked += [lead.id for lead in page]
            last = max(page, key=order_key)
            mark = Bookmark(last.modified_at, last.id)  # type: ignore[arg-type]
            assert len(walked) <= len(order), f"the stream repeats itself: {walked}"
        assert sorted(walked) == sorted(order) and len(walked) == len(set(walked)), f"each change read once: {walked} vs {order}"

    def test_changed_stream_stops_at_until(self, backend: ContractBackend) -> None:
        a = backend.add_lead(lead_inputs("Acme"))
        b = backend.add_lead(lead_inputs("Beta"))
        conn = backend.connector()
        assert a not in [lead.id for lead in conn.fetch_changed(EPOCH, datetime.now(UTC) - timedelta(hours=12), 10_000)]
        backend.set_input(a, "monthly_orders", 7)
        time.sleep(0.01)  # CRM clocks tick in milliseconds: b's change lands on a later tick
        backend.set_input(b, "monthly_orders", 8)
        every = {lead.id: lead for lead in conn.fetch_changed(EPOCH, later(), 10_000)}
        until, later_change = every[a].modified_at, every[b].modified_at
        assert until is not None and later_change is not None and until < later_change
        got = [lead.id for lead in conn.fetch_changed(EPOCH, until, 10_000)]
        assert a in got, "a change at `until` is read (at or before)"
        assert b not in got, "a change after `until` waits for a later read"
