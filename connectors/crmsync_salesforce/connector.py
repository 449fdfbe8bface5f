"""The Salesforce connector: SOQL reads with paging, sObject Collections writes, describe-based checks."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import Any

import requests

from crmsync import (
    Bookmark,
    Connector,
    ConnectorContext,
    CrmLead,
    FatalConnectorError,
    LabelRecord,
    Problem,
    RetriableConnectorError,
    ScoreUpdate,
    WriteOutcome,
)
from crmsync.support import DECISIONS, SYSTEM_CLOCK, Clock, harvest_label, one_of

from . import setup, soql
from .client import SalesforceClient, make_session
from .config import SalesforceOptions

log = logging.getLogger("crmsync.salesforce")

BATCH = 200  # sObject Collections: at most 200 records per update call (2,000 per retrieve)
SOQL_IDS = 300  # ids per `Id IN (...)` query when sObject Collections retrieve is unavailable (old API versions)
RETRYABLE_CODES = {"UNABLE_TO_LOCK_ROW"}


def _parse_sf_datetime(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    if len(text) == 10:  # a date field (ConvertedDate)
        return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
    return datetime.fromisoformat(text)


class SalesforceConnector(Connector):
    """Scores ``options.object`` records (Lead by default) of one org.

    ``session`` lets a caller supply the ``requests.Session`` every call goes through (proxies, extra
    transport adapters); by default one is built from ``ca_bundle`` and ``request_timeout_s``. ``clock`` times
    the waits between retries (a test passes one that never sleeps).
    """

    Options = SalesforceOptions
    options: SalesforceOptions
    write_batch = BATCH
    read_batch = 2000

    def __init__(
        self, options: SalesforceOptions, context: ConnectorContext, *, session: requests.Session | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(options, context)
        self.clock = clock  # retry waits (crmsync.support.RetryPolicy)
        soql.name(options.object, "object")
        for api in [*self.fields.inputs.values(), *self._outputs().values(), *filter(None, [self.fields.review_decision])]:
            soql.name(api)
        self.session = session if session is not None else make_session(options, context.base_dir)
        self._client: SalesforceClient | None = None
        self._described: dict[str, dict[str, Any]] | None = None
        self._collections_retrieve = True  # POST composite/sobjects/<object> (API 42.0+); SOQL if refused

    # -- plumbing -----------------------------------------------------------------------------------
    @property
    def client(self) -> SalesforceClient:
        if self._client is None:  # log in lazily, so `crmsync check` can report a failed login as a problem
            self._client = SalesforceClient(self.options, self.context.base_dir, self.session, self.clock)
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
            page = c.call(partial(c.sf.query_more, url, identifier_is_url=True, headers=headers), "query_more")

    # -- fetch --------------------------------------------------------------------------------------
    def _read_columns(self) -> list[str]:
        f = self.fields
        return ["Id", "LastModifiedDate", f.outputs.score, *filter(None, [f.review_decision, f.outputs.input_hash]), *f.inputs.values()]

    def _open(self) -> str:
        """The filter every read shares: converted leads are never fetched."""
        return " AND IsConverted = false" if self.is_lead and self.options.skip_converted else ""

    def fetch_unscored(self, after_id: str | None, limit: int) -> Iterator[CrmLead]:
        if limit <= 0:
            return
        cols = self._read_columns()
        self._require(cols)
        self.client.ensure_budget()
        where = f"{self.fields.outputs.score} = null"
        if self.fields.review_decision:
            where += f" AND {self.fields.review_decision} = null"
        if after_id:
            where += f" AND Id > {soql.string_literal(after_id)}"
        q = soql.select(self.options.object, cols, where + self._open(), order_by=["Id"], limit=limit)
        for n, rec in enumerate(self._query(q), 1):
            yield self._lead(rec)
            if n >= limit:
                return

    def fetch_changed(self, after: Bookmark, until: datetime, limit: int) -> Iterator[CrmLead]:
        if limit <= 0:
            return
        cols = self._read_columns()
        self._require(cols)
        self.client.ensure_budget()
        # SOQL datetime literals have whole seconds: select from the bookmark's second on and drop, here, what
        # lies at or before the bookmark itself. Those dropped rows count toward the query's LIMIT, so when they
        # fill it (a bulk update: thousands of records in one second) ask again with room for them; else the
        # stream would stall on that second for good.
        ceiling = until.replace(microsecond=0) + timedelta(seconds=1) if until.microsecond else until
        mark, n, room = after, 0, 0
        while True:
            at = soql.datetime_literal(mark.modified_at)
            where = f"LastModifiedDate >= {at}"
            if mark.lead_id:
                where = f"(LastModifiedDate > {at} OR (LastModifiedDate = {at} AND Id > {soql.string_literal(mark.lead_id)}))"
            where += f" AND LastModifiedDate <= {soql.datetime_literal(ceiling)}"
            asked = limit - n + room
            q = soql.select(self.options.object, cols, where + self._open(), order_by=["LastModifiedDate", "Id"], limit=asked)
            rows = dropped = 0
            for rec in self._query(q):
                rows += 1
                lead = self._lead(rec)
                if not mark.before(lead):
                    dropped += 1
                    continue
                if lead.modified_at and lead.modified_at > until:
                    continue
                yield lead
                n += 1
                mark = Bookmark(lead.modified_at, lead.id)  # type: ignore[arg-type]
                if n >= limit:
                    return
            if rows < asked or dropped <= room:
                return  # the query ran dry, or the bookmark's own second no longer crowds out what follows
            room = dropped

    def _retrieve(self, ids: Sequence[str], cols: list[str]) -> list[dict[str, Any]]:
        """sObject Collections retrieve: up to 2,000 records by id in one call (POST, so no URL length limit).
        Ids that no longer exist (or cannot be seen) come back as null and are left out."""
        self._require(cols)
        self.client.ensure_budget()
        c = self.client
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), self.read_batch):
            chunk = list(ids[start : start + self.read_batch])
            if self._collections_retrieve:
                body = {"ids": chunk, "fields": cols}
                try:
                    records = c.call(
                        partial(c.sf.restful, f"composite/sobjects/{self.options.object}", method="POST", json=body), "retrieve"
                    )
                    out.extend(r for r in records or [] if r)
                    continue
                except FatalConnectorError as exc:
                    if not any(code in str(exc) for code in ("HTTP 404", "HTTP 405")):
                        raise
                    log.warning("sObject Collections retrieve is not available here (%s); reading by SOQL instead", exc)
                    self._collections_retrieve = False
            for i in range(0, len(chunk), SOQL_IDS):  # a GET URL holds about 800 ids; stay well below
                where = f"Id IN ({', '.join(soql.string_literal(x) for x in chunk[i : i + SOQL_IDS])})"
                out.extend(self._query(soql.select(self.options.object, cols, where)))
        return out

    def fetch_ids(self, ids: Sequence[str]) -> Iterator[CrmLead]:
        if ids:
            yield from (self._lead(rec) for rec in self._retrieve(ids, self._read_columns()))

    def read_decisions(self, ids: Sequence[str]) -> dict[str, str | None]:
        decision = self.fields.review_decision
        if not decision or not ids:
            return {}
        return {
            rec["Id"]: (str(rec[decision]) if rec.get(decision) not in (None, "") else None)
            for rec in self._retrieve(ids, ["Id", decision])
        }

    def can_spend(self) -> bool:
        usage = self._client.usage() if self._client is not None else None  # the last Sforce-Limit-Info: no call
        return usage is None or usage[0] < self.options.max_api_share * usage[1]

    def _inputs(self, rec: dict[str, Any]) -> dict[str, Any]:
        return {name: rec.get(api) for name, api in self.fields.inputs.items()}

    def _lead(self, rec: dict[str, Any]) -> CrmLead:
        decision = rec.get(self.fields.review_decision) if self.fields.review_decision else None
        hash_field = self.fields.outputs.input_hash
        return CrmLead(
            id=rec["Id"],
            inputs=self._inputs(rec),
            has_score=rec.get(self.fields.outputs.score) is not None,
            input_hash=(rec.get(hash_field) or None) if hash_field else None,
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
            chunk = updates[start : start + BATCH]
            body = {"allOrNone": False, "records": [self._record(up, described) for up in chunk]}
            try:
                results = c.call(partial(c.sf.restful, "composite/sobjects", method="PATCH", json=body), "update")
            except FatalConnectorError as exc:
                self._described = None  # a field may have been deleted since describe: look again next time
                raise FatalConnectorError(f"{exc} (run `crmsync check`)") from None
            if not isinstance(results, list) or len(results) != len(chunk):
                raise RetriableConnectorError(f"Salesforce update: expected {len(chunk)} results, got {results!r:.200}")
            out.extend(self._outcome(up, res) for up, res in zip(chunk, results, strict=True))
        return out

    def _record(self, up: ScoreUpdate, described: dict[str, dict[str, Any]]) -> dict[str, Any]:
        shares = {self.fields.outputs.confidence, self.fields.outputs.probability} - {None}  # 0..1 values
        rec: dict[str, Any] = {"attributes": {"type": self.options.object}, "id": up.lead_id}
        for api, value in up.values.items():
            spec = described[api]
            ftype = spec.get("type")
            if ftype == "boolean":
                value = bool(value)  # checkboxes are never null
            elif isinstance(value, datetime):
                value = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            elif isinstance(value, (list, tuple)):
                value = "; ".join(map(str, value))
            if ftype == "percent" and api in shares and isinstance(value, (int, float)) and value <= 1:
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

    # -- check / fields (crmsync_salesforce/setup.py) ----------------------------------------------------
    def check(self) -> list[Problem]:
        return setup.check(self)

    def output_options(self) -> dict[str, list[str]]:
        return setup.output_options(self)

    def create_fields(self) -> list[str]:
        return setup.create_fields(self)

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
        for rec in self._query(soql.select(self.options.object, cols, " OR ".join(conds), order_by=["CreatedDate", "Id"])):
            label = harvest_label(
                rec["Id"],
                self._inputs(rec),
                decision=rec.get(decision) if decision else None,
                converted=bool(rec.get("IsConverted")),
                disqualified=one_of(rec.get("Status"), self.options.disqualified_statuses),
                modified_at=_parse_sf_datetime(rec.get("LastModifiedDate")),
                converted_at=_parse_sf_datetime(rec.get("ConvertedDate")),
            )
            if label is not None:
                yield label

    def close(self) -> None:
        self.session.close()
