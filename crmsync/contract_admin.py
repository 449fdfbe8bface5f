"""Contract tests of the admin side: ``check``, ``create_fields``, ``fetch_ids``, ``read_decisions``, ``fetch_labels``.

Each is what a person relies on when something is wrong (check), when setting up (create_fields), when asking for a
rescore (fetch_ids) or when measuring the scores (labels): a connector that answers "fine" without looking fails here.
"""

from __future__ import annotations

import pytest

from .config import FieldsConfig
from .connector import Connector
from .contract_backend import ContractBackend, Unsupported, lead_inputs, scores


def _problems_naming(conn: Connector, name: str) -> list[str]:
    return [f"{p.where}: {p.message}" for p in conn.check() if p.severity == "error" and name in f"{p.where} {p.message}"]


class AdminContract:
    """Mixed into ``ConnectorContract``; every test takes the subclass's ``backend`` fixture."""

    def test_check_passes_on_a_good_setup(self, backend: ContractBackend) -> None:
        problems = [p for p in backend.connector().check() if p.severity == "error"]
        assert problems == [], problems

    def test_check_names_a_field_that_does_not_exist(self, backend: ContractBackend) -> None:
        missing = backend.missing_field
        fields = FieldsConfig.model_validate({**backend.fields.model_dump(), "inputs": {**backend.fields.inputs, "title": missing}})
        problems = backend.connector(fields).check()
        assert [p for p in problems if p.severity == "error"], f"check() must find the input mapped to {missing!r}, which does not exist"
        found = [p for p in problems if p.severity == "error" and missing in f"{p.where} {p.message}"]
        assert found, f"the problem names the field: {problems}"
        assert all(p.fix for p in found), "each problem says how to fix it"

    def test_create_fields_makes_missing_outputs_writable(self, backend: ContractBackend) -> None:
        missing = backend.missing_field
        outputs = {**backend.fields.outputs.model_dump(), "tier": missing}
        fields = FieldsConfig.model_validate({**backend.fields.model_dump(), "outputs": outputs})
        conn = backend.connector(fields)
        try:
            created = conn.create_fields()
        except NotImplementedError as exc:  # the connector cannot: it must say what to create, by name
            assert missing in str(exc), f"a connector that cannot create fields names the missing ones: {exc}"
            return
        assert isinstance(created, list)
        assert not _problems_naming(conn, missing), "after create_fields the output exists (check finds nothing against it)"
        a = backend.add_lead(lead_inputs("Acme"))
        assert all(o.ok for o in conn.write([scores(fields, a, 90)]))
        assert backend.raw_record(a).get(missing) == "A", "the created field holds what crmsync writes"
        again = conn.create_fields()
        assert not [c for c in again if missing in c], f"create_fields is idempotent: it created {missing!r} twice"

    def test_fetch_ids_returns_exactly_the_requested_leads(self, backend: ContractBackend) -> None:
        ids = [backend.add_lead(lead_inputs(f"Co {i}", i)) for i in range(5)]
        conn = backend.connector()
        assert all(o.ok for o in conn.write([scores(backend.fields, ids[0], 70)]))  # scored leads are read too
        backend.set_review_decision(ids[1], "qualified")  # and decided ones
        backend.delete_lead(ids[4])
        got = list(conn.fetch_ids([ids[3], ids[0], ids[1], ids[4]]))
        assert sorted(lead.id for lead in got) == sorted([ids[0], ids[1], ids[3]]), (
            "exactly the requested leads that exist: none added, none missing, each once"
        )
        by_id = {lead.id: lead for lead in got}
        assert by_id[ids[0]].has_score is True and by_id[ids[3]].has_score is False
        assert by_id[ids[1]].review_decision == "qualified"
        assert set(by_id[ids[3]].inputs) <= set(backend.fields.inputs) and by_id[ids[3]].inputs["company"] == "Co 3"
        assert list(conn.fetch_ids([])) == []

    def test_review_decision_is_reported(self, backend: ContractBackend) -> None:
        a = backend.add_lead({"company": "Acme", "title": "COO", "monthly_orders": 100, "description": ""})
        b = backend.add_lead({"company": "Beta", "title": "COO", "monthly_orders": 100, "description": ""})
        backend.set_review_decision(a, "qualified")
        conn = backend.connector()
        assert conn.read_decisions([a, b]) == {a: "qualified", b: None}
        assert {lead.id: lead.review_decision for lead in conn.fetch_ids([a, b])} == {a: "qualified", b: None}

    def test_labels_follow_the_rule(self, backend: ContractBackend) -> None:
        """A reviewer's decision is the label (it beats a conversion); else a conversion is 'qualified'."""
        q, u, won, both, plain = (backend.add_lead(lead_inputs(name)) for name in ("Q Co", "U Co", "Won Co", "Both Co", "Plain Co"))
        backend.set_review_decision(q, "qualified")
        backend.set_review_decision(u, "unqualified")
        backend.set_review_decision(both, "unqualified")
        expected = {q: ("qualified", "review"), u: ("unqualified", "review"), both: ("unqualified", "review")}
        try:
            backend.mark_converted(won)
            backend.mark_converted(both)
            expected[won] = ("qualified", "conversion")
        except Unsupported:  # a CRM without conversions: decisions only
            pass
        labels = list(backend.connector().fetch_labels())
        got = {x.lead_id: (x.outcome, x.source) for x in labels}
        assert len(got) == len(labels), "one label per lead"
        assert got == expected, f"labels per the rule (decision, then conversion; {plain} has none)"
        assert next(x for x in labels if x.lead_id == q).inputs["company"] == "Q Co", "labels carry the mapped inputs"

    def test_a_disqualified_lead_is_an_unqualified_label(self, backend: ContractBackend) -> None:
        lost, decided = backend.add_lead(lead_inputs("Lost Co")), backend.add_lead(lead_inputs("Decided Co"))
        conn = backend.connector()
        try:
            backend.mark_disqualified(lost)
            backend.mark_disqualified(decided)
        except Unsupported as exc:
            pytest.skip(f"{type(conn).__name__}: {exc}")
        backend.set_review_decision(decided, "qualified")
        got = {x.lead_id: (x.outcome, x.source) for x in conn.fetch_labels()}
        assert got == {lost: ("unqualified", "conversion"), decided: ("qualified", "review")}, "a decision beats a disqualification"
