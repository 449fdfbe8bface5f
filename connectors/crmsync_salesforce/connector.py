"""The Salesforce connector: SOQL reads with paging, sObject Collections writes, describe-based checks."""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timezone
from typing import Any

import requests

from crmsync import (
    ConnectorContext,
    ConnectorError,
    Connector,
    CrmLead,
    FatalConnectorError,
    LabelRecord,
    Problem,
    RetriableConnectorError,
    ScoreUpdate,
    WriteOutcome,
)

from . import fields as fieldspec
from . import soql
from .client import SalesforceClient, make_session
from .config import SalesforceOptions

log = logging.getLogger("crmsync.salesforce")

BATCH = 200  # sObject Collections: at most 200 records per call
RETRYABLE_CODES = {"UNABLE_TO_LOCK_ROW"}
DECISIONS = ("qualified", "unqualified")


def _parse_sf_datetime(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    if len(text) == 10:  # a date field (ConvertedDate)
        return datetime.combine(date.fromisoformat(text), time(), tzinfo=timezone.utc)
    return datetime.fromisoformat(text)


class SalesforceConnector(Connector):
    """Scores ``options.object`` records (Lead by default) of one org.

    ``session`` lets a caller supply the ``requests.Session`` every call goes through (proxies, extra
    transport adapters); by default one is built from ``ca_bundle`` and ``request_timeout_s``.
    """

    Options = SalesforceOptions
    options: SalesforceOptions

    def __init__(self, options: SalesforceOptions, context: ConnectorContext, *, session: requests.Session | None = None) -> None:
        super().__init__(options, context)
        soql.name(options.object, "object")
        for api in [*self.fields.inputs.values(), *self._outputs().values(), *filter(None, [self.fields.review_decision])]:
            soql.name(api)
        self.session = session if session is not None else make_session(options, context.base_dir)
        self._client: SalesforceClient | None = None
        self._described: dict[str, dict[str, Any]] | None = None

    # -- plumbing -----------------------------------------------------------------------------------
    @property
    def client(self) -> SalesforceClient:
        if self._client is None:  # log in lazily, so `crmsync check` can report a failed login as a problem
            self._client = SalesforceClient(self.options, self.context.base_dir, self.session)
        return self._client

    @property
    def is_lead(self) -> bool:
        return self.options.object == "Lead"

    def _outputs(self) -> dict[str, str]:
        return {k: v for k, v in self.fields.outputs.model_dump().items() if v}

    def describe(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """Field name → describe entry, fetched once per connector (one API call)."""
        if self._described is None or refresh:
            c = self.client
            path = f"sobjects/{self.options.object}/describe"
            result = c.call(lambda: c.sf.restful(path), "describe")
            self._described = {f["name"]: f for f in (result or {}).get("fields", [])}
        return self._described

    def _require(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        described = self.describe()
        missing = [n for n in names if n not in described]
        if missing:
            raise FatalConnectorError(
                f"Salesforce {self.options.object} fields {missing} do not exist or are hidden from the integration "
                "user. Run `crmsync check` for the fix."
            )
        return described

    def _query(self, q: str) -> Iterator[dict[str, Any]]:
        c = self.client
        headers = {"Sforce-Query-Options": f"batchSize={self.options.page_size}"}
        log.debug("salesforce query: %s", q)
        page = c.call(lambda: c.sf.query(q, headers=headers), "query")
        while True:
            yield from page.get("records", [])
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return
            url = page["nextRecordsUrl"]
            page = c.call(lambda: c.sf.query_more(url, identifier_is_url=True, headers=headers), "query_more")

    # -- fetch --------------------------------------------------------------------------------------
    def fetch(self, since: datetime | None, limit: int) -> Iterator[CrmLead]:
        score, decision = self.fields.outputs.score, self.fields.review_decision
        cols = ["Id", "LastModifiedDate", score, *filter(None, [decision]), *self.fields.inputs.values()]
        self._require(cols)
        self.client.ensure_budget()
        # `score = null` stays in the filter: our own writes bump LastModifiedDate, so `since` is only an optimisation.
        where = f"{score} = null"
        if since is not None:
            where = f"({where} OR LastModifiedDate > {soql.datetime_literal(since)})"
        if self.is_lead and self.options.skip_converted:
            where += " AND IsConverted = false"
        q = soql.select(self.options.object, cols, where, order_by=["CreatedDate", "Id"], limit=limit)
        for n, rec in enumerate(self._query(q), 1):
            yield self._lead(rec)
            if n >= limit:
                return

    def _inputs(self, rec: dict[str, Any]) -> dict[str, Any]:
        return {name: rec.get(api) for name, api in self.fields.inputs.items()}

    def _lead(self, rec: dict[str, Any]) -> CrmLead:
        decision = rec.get(self.fields.review_decision) if self.fields.review_decision else None
        return CrmLead(
            id=rec["Id"],
            inputs=self._inputs(rec),
            has_score=rec.get(self.fields.outputs.score) is not None,
            review_decision=str(decision) if decision not in (None, "") else None,
            modified_at=_parse_sf_datetime(rec.get("LastModifiedDate")),
        )

    # -- write --------------------------------------------------------------------------------------
    def write(self, updates: Sequence[ScoreUpdate]) -> list[WriteOutcome]:
        if not updates:
            return []
        described = self._require(sorted({k for up in updates for k in up.values}))
        self.client.ensure_budget()
        c = self.client
        out: list[WriteOutcome] = []
        for start in range(0, len(updates), BATCH):
            chunk = updates[start:start + BATCH]
            body = {"allOrNone": False, "records": [self._record(up, described) for up in chunk]}
            try:
                results = c.call(lambda: c.sf.restful("composite/sobjects", method="PATCH", json=body), "update")
            except FatalConnectorError as exc:
                self._described = None  # a field may have been deleted since describe: look again next time
                raise FatalConnectorError(f"{exc} (run `crmsync check`)") from None
            if not isinstance(results, list) or len(results) != len(chunk):
                raise RetriableConnectorError(f"Salesforce update: expected {len(chunk)} results, got {results!r:.200}")
            out.extend(self._outcome(up, res) for up, res in zip(chunk, results))
        return out

    def _record(self, up: ScoreUpdate, described: dict[str, dict[str, Any]]) -> dict[str, Any]:
        confidence = self.fields.outputs.confidence
        rec: dict[str, Any] = {"attributes": {"type": self.options.object}, "id": up.lead_id}
        for api, value in up.values.items():
            spec = described[api]
            ftype = spec.get("type")
            if ftype == "boolean":
                value = bool(value)  # checkboxes are never null
            elif isinstance(value, datetime):
                value = value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            elif isinstance(value, (list, tuple)):
                value = "; ".join(map(str, value))
            if ftype == "percent" and api == confidence and isinstance(value, (int, float)) and value <= 1:
                value = round(value * 100, 2)  # a Percent field stores 75 for 75 %
            if ftype in ("string", "textarea") and isinstance(value, str) and spec.get("length"):
                value = value[: int(spec["length"])]
            rec[api] = value
        return rec

    @staticmethod
    def _outcome(up: ScoreUpdate, res: dict[str, Any]) -> WriteOutcome:
        if res.get("success"):
            return WriteOutcome(lead_id=up.lead_id, ok=True)
        errors = res.get("errors") or [{"statusCode": "UNKNOWN_EXCEPTION", "message": "no error detail"}]
        codes = [str(e.get("statusCode", "")) for e in errors]
        message = "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in errors)
        return WriteOutcome(lead_id=up.lead_id, ok=False, error=message, retryable=any(c in RETRYABLE_CODES for c in codes))

    # -- check / fields -----------------------------------------------------------------------------
    def check(self) -> list[Problem]:
        try:
            described = self.describe(refresh=True)
        except ConnectorError as exc:
            return [Problem(where="crm.options", message=str(exc), fix="Fix the credentials, domain or instance_url in [crm.options] and its environment variables")]
        if not described:
            return [Problem(where="crm.options.object", message=f"{self.options.object} has no visible fields", fix="Give the integration user read access to the object")]
        problems = fieldspec.check(self.options.object, self.fields, described)
        usage = self.client.usage()
        if usage and usage[0] >= self.options.max_api_share * usage[1]:
            problems.append(Problem(
                where="crm.options.max_api_share", severity="warning",
                message=f"the org has used {usage[0]}/{usage[1]} daily API requests, past max_api_share = {self.options.max_api_share:g}",
                fix="Wait for usage to drop (rolling 24 h), or raise max_api_share if other integrations can spare it",
            ))
        return problems

    def create_fields(self) -> list[str]:
        """Not automated on purpose (see the package docstring): prints the exact Setup steps instead."""
        try:
            described: dict[str, dict[str, Any]] | None = self.describe(refresh=True)
        except ConnectorError:
            described = None
        steps = fieldspec.instructions(self.options.object, self.fields, described)
        if not steps:
            return []
        raise NotImplementedError(
            "crmsync does not create Salesforce fields itself: an admin creates them (it takes a few minutes and "
            "keeps the integration user without 'Customize Application'). In Salesforce:\n" + steps +
            "\nThen run `crmsync check`."
        )

    # -- labels -------------------------------------------------------------------------------------
    def fetch_labels(self) -> Iterator[LabelRecord]:
        decision = self.fields.review_decision
        extra = ["IsConverted", "Status", "ConvertedDate"] if self.is_lead else []
        cols = ["Id", "LastModifiedDate", *filter(None, [decision]), *self.fields.inputs.values(), *extra]
        described = self._require(cols)
        self.client.ensure_budget()
        conds = []
        if decision and described[decision].get("filterable", True):
            conds.append(f"{decision} IN ({', '.join(soql.string_literal(d) for d in DECISIONS)})")
        if self.is_lead:
            conds.append("IsConverted = true")
            if self.options.disqualified_statuses:
                conds.append(f"Status IN ({', '.join(soql.string_literal(s) for s in self.options.disqualified_statuses)})")
        if not conds:
            return
        statuses = {s.lower() for s in self.options.disqualified_statuses}
        for rec in self._query(soql.select(self.options.object, cols, " OR ".join(conds), order_by=["CreatedDate", "Id"])):
            value = str(rec.get(decision) or "").strip().lower() if decision else ""
            modified = _parse_sf_datetime(rec.get("LastModifiedDate"))
            if value in DECISIONS:
                yield LabelRecord(rec["Id"], self._inputs(rec), value, "review", modified)  # type: ignore[arg-type]
            elif rec.get("IsConverted"):
                yield LabelRecord(rec["Id"], self._inputs(rec), "qualified", "conversion", _parse_sf_datetime(rec.get("ConvertedDate")) or modified)
            elif str(rec.get("Status") or "").lower() in statuses:
                yield LabelRecord(rec["Id"], self._inputs(rec), "unqualified", "conversion", modified)

    def close(self) -> None:
        self.session.close()
