"""HubSpot CRM v3: fetch with keyset-paged search, write with batch update, check and create properties."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

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
    require_env,
)
from crmsync.support import DECISIONS, SYSTEM_CLOCK, Clock, harvest_label, one_of

from .client import HubSpotClient, HubSpotRequestError, HubSpotTLSError, resolve_ca_bundle
from .config import HubSpotOptions
from .properties import FIELD_FIX, definitions, type_problem
from .search import SEARCH_PAGE, Search, parse_time

log = logging.getLogger(__name__)

BATCH = 100  # HubSpot's maximum batch update
#: 207 error categories worth retrying later; everything else (OBJECT_NOT_FOUND, VALIDATION_ERROR ...) is final.
RETRYABLE_CATEGORIES = {"RATE_LIMITS", "LOCKED", "CONFLICT", "TIMEOUT", "SERVICE_UNAVAILABLE"}


def to_hubspot(value: Any) -> str:
    """Python value → the string HubSpot stores. ``None`` clears the property."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(value, ".6f").rstrip("0").rstrip(".") or "0"
    if isinstance(value, datetime):
        v = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value))
    return str(value)


def _filled(value: Any) -> bool:
    return value not in (None, "")


class HubSpotConnector(Connector):
    Options = HubSpotOptions
    options: HubSpotOptions
    write_batch = BATCH
    read_batch = BATCH

    def __init__(self, options: HubSpotOptions, context: ConnectorContext, *, clock: Clock | None = None) -> None:
        super().__init__(options, context)
        self._batch_read = True  # POST .../batch/read; a search by id where it is refused
        token = require_env(options.access_token_env, "[crm] type = hubspot")
        self.client = HubSpotClient(options, token, clock or SYSTEM_CLOCK, ca_bundle=resolve_ca_bundle(options, context.base_dir))
        self.search = Search(self.client, options)

    # -- fetch --------------------------------------------------------------------------------------
    def _read_properties(self) -> list[str]:
        o = self.options
        wanted = [*self.fields.inputs.values(), self.fields.outputs.score, o.stage_property, o.modified_property, "hs_object_id"]
        wanted += [p for p in (self.fields.review_decision, self.fields.outputs.input_hash, o.disqualified_property) if p]
        return list(dict.fromkeys(wanted))

    def _open(self, record: Any) -> bool:
        skip = {s.lower() for s in self.options.skip_lifecycle_stages}
        return str((record.properties or {}).get(self.options.stage_property) or "").lower() not in skip

    def fetch_unscored(self, after_id: str | None, limit: int) -> Iterator[CrmLead]:
        if limit <= 0:
            return
        empty = [{"propertyName": self.fields.outputs.score, "operator": "NOT_HAS_PROPERTY"}]
        if self.fields.review_decision:
            empty.append({"propertyName": self.fields.review_decision, "operator": "NOT_HAS_PROPERTY"})
        groups = [[*empty, *v] for v in self.search.stage_variants()]
        seen: set[str] = set()
        start = int(after_id) if after_id and after_id.isdigit() else 0
        for record in self.search.records(groups, self._read_properties(), lambda: limit - len(seen), start):
            if record.id in seen or not self._open(record):
                continue
            seen.add(record.id)
            yield self._lead(record)
            if len(seen) >= limit:
                return

    def fetch_changed(self, after: Bookmark, until: datetime, limit: int) -> Iterator[CrmLead]:
        """The changes after the bookmark, up to ``until`` (how: ``Search.changed``)."""
        for record in self.search.changed(after, until, limit, self._read_properties(), self._open):
            yield self._lead(record)

    def _read(self, ids: Sequence[str], properties: list[str]) -> Iterator[Any]:
        """Records by id: batch read, 100 a call (missing ids come back as errors, 207, and are left out). Where
        batch read is refused as unknown (404/405), a search on ``hs_object_id IN`` does the same job."""
        for start in range(0, len(ids), BATCH):
            chunk = [str(i) for i in ids[start : start + BATCH]]
            if self._batch_read:
                try:
                    yield from self.client.batch_read(chunk, properties).results or []
                    continue
                except HubSpotRequestError as exc:
                    if exc.status not in (404, 405):
                        raise
                    log.warning("HubSpot batch read is not available (%s); reading by search instead", exc)
                    self._batch_read = False
            group = [[{"propertyName": "hs_object_id", "operator": "IN", "values": chunk}]]
            yield from self.search.records(group, properties, lambda: SEARCH_PAGE)

    def fetch_ids(self, ids: Sequence[str]) -> Iterator[CrmLead]:
        yield from (self._lead(r) for r in self._read(ids, self._read_properties()))

    def read_decisions(self, ids: Sequence[str]) -> dict[str, str | None]:
        decision = self.fields.review_decision
        if not decision or not ids:
            return {}
        out: dict[str, str | None] = {}
        for r in self._read(ids, [decision]):
            value = (r.properties or {}).get(decision)
            out[str(r.id)] = str(value) if _filled(value) else None
        return out

    def _inputs(self, props: dict[str, Any]) -> dict[str, Any]:
        return {name: props.get(prop) for name, prop in self.fields.inputs.items()}

    def _lead(self, record: Any) -> CrmLead:
        props = record.properties or {}
        decision = props.get(self.fields.review_decision) if self.fields.review_decision else None
        hash_prop = self.fields.outputs.input_hash
        return CrmLead(
            id=str(record.id),
            inputs=self._inputs(props),
            has_score=_filled(props.get(self.fields.outputs.score)),
            input_hash=(props.get(hash_prop) or None) if hash_prop else None,
            review_decision=str(decision) if _filled(decision) else None,
            modified_at=parse_time(props.get(self.options.modified_property)) or getattr(record, "updated_at", None),
        )

    # -- write --------------------------------------------------------------------------------------
    def write(self, updates: Sequence[ScoreUpdate]) -> list[WriteOutcome]:
        # One input per lead: a lead given twice is written once (last values win), and HubSpot 400s on
        # duplicate ids in one batch anyway.
        merged: dict[str, dict[str, str]] = {}
        for up in updates:
            merged.setdefault(up.lead_id, {}).update({k: to_hubspot(v) for k, v in up.values.items()})
        ids = list(merged)
        results: dict[str, WriteOutcome] = {}
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            try:
                results.update(self._update(chunk, merged))
            except (RetriableConnectorError, FatalConnectorError) as exc:
                if not results:
                    raise  # nothing written: the whole call failed
                for lead_id in ids[start:]:  # earlier batches landed: report them, and these as not written
                    results[lead_id] = WriteOutcome(lead_id=lead_id, ok=False, error=f"not written: {exc}", retryable=True)
                break
        return [results[up.lead_id] for up in updates]

    def _update(self, ids: list[str], values: dict[str, dict[str, str]]) -> dict[str, WriteOutcome]:
        try:
            res = self.client.batch_update([{"id": i, "properties": values[i]} for i in ids])
        except HubSpotRequestError as exc:
            if exc.status != 400:
                raise
            bad = self._missing_everywhere(exc.body, ids, values)
            if bad:
                raise FatalConnectorError(f"HubSpot property {bad!r} does not exist. {FIELD_FIX}") from None
            if len(ids) == 1:  # isolated: this record is the bad one
                return {ids[0]: WriteOutcome(lead_id=ids[0], ok=False, error=f"{exc.category}: {exc.body.get('message', str(exc))}")}
            mid = len(ids) // 2
            log.debug("hubspot batch of %d rejected (400 %s); splitting", len(ids), exc.category)
            return {**self._update(ids[:mid], values), **self._update(ids[mid:], values)}
        out = {str(r.id): WriteOutcome(lead_id=str(r.id), ok=True) for r in (res.results or [])}
        for err in getattr(res, "errors", None) or []:  # 207 multi-status
            category = err.category or "ERROR"
            for lead_id in (err.context or {}).get("ids", []):
                out[lead_id] = WriteOutcome(
                    lead_id=lead_id, ok=False, error=f"{category}: {err.message}", retryable=category in RETRYABLE_CATEGORIES
                )
        for lead_id in ids:
            out.setdefault(
                lead_id, WriteOutcome(lead_id=lead_id, ok=False, error="HubSpot returned no result for this record", retryable=True)
            )
        return {i: out[i] for i in ids}

    @staticmethod
    def _missing_everywhere(body: dict[str, Any], ids: list[str], values: dict[str, dict[str, str]]) -> str | None:
        """A property HubSpot says does not exist and that every record sets: splitting cannot help."""
        text = str(body.get("message", ""))
        if "PROPERTY_DOESNT_EXIST" not in text:
            return None
        for prop in set.intersection(*(set(values[i]) for i in ids)):
            if f'"{prop}"' in text or f"'{prop}'" in text:
                return prop
        return None

    # -- check / create -----------------------------------------------------------------------------
    def _mapped_outputs(self) -> dict[str, str]:
        out = {k: v for k, v in self.fields.outputs.model_dump().items() if v}
        if self.fields.review_decision:
            out["review_decision"] = self.fields.review_decision
        return out

    def check(self) -> list[Problem]:
        where_token = f"crm.options.access_token_env ({self.options.access_token_env})"
        try:
            props = {p.name: p for p in self.client.properties()}
        except HubSpotTLSError as exc:
            return [
                Problem(
                    where="crm.options.ca_bundle",
                    message=str(exc),
                    fix=(
                        "set [crm.options] ca_bundle to the PEM file of the CA that signed the certificate (your proxy's CA), "
                        "then run `crmsync check` again"
                    ),
                )
            ]
        except RetriableConnectorError as exc:
            return [
                Problem(
                    where="crm.options.host",
                    message=str(exc),
                    fix=f"check that {self.options.host} is reachable, then run `crmsync check` again",
                )
            ]
        except FatalConnectorError as exc:
            return [
                Problem(
                    where=where_token,
                    message=str(exc),
                    fix="create a private app in HubSpot with the scopes named above and put its token in that variable",
                )
            ]
        problems: list[Problem] = []
        for name, prop in self.fields.inputs.items():
            if prop not in props:
                problems.append(
                    Problem(
                        where=f"fields.inputs.{name}",
                        message=f"HubSpot property {prop!r} does not exist on {self.options.object_type}",
                        fix="fix the mapping to an existing property's internal name, or create the property in HubSpot",
                    )
                )
        for name, prop in self._mapped_outputs().items():
            where = "fields.review_decision" if name == "review_decision" else f"fields.outputs.{name}"
            if prop not in props:
                problems.append(Problem(where=where, message=f"HubSpot property {prop!r} does not exist", fix=FIELD_FIX))
            elif (problem := type_problem(name, props[prop])) is not None:
                problems.append(
                    Problem(
                        where=where,
                        message=f"HubSpot property {prop!r} {problem}",
                        fix=f"map {where} to another name (then `crmsync fields create`), or change the property's type in HubSpot",
                    )
                )
        try:  # the read scope and the object itself (the Leads object needs Leads set up in the portal)
            self.client.search({"limit": 1, "properties": ["hs_object_id"], "filterGroups": []})
        except (FatalConnectorError, RetriableConnectorError) as exc:
            problems.append(
                Problem(
                    where="crm.options.object_type",
                    message=str(exc),
                    fix="grant the read scope for this object, or check that the object is set up in the portal",
                )
            )
        return problems

    def output_options(self) -> dict[str, list[str]]:
        """Mapped outputs (and the review decision) that are enumerations (dropdowns): the option values each
        allows. `crmsync check` compares them with every value crmsync may write (HubSpot rejects others)."""
        props = {p.name: p for p in self.client.properties()}
        return {
            name: [str(o.value) for o in (props[prop].options or [])]
            for name, prop in self._mapped_outputs().items()
            if prop in props and props[prop].type == "enumeration"
        }

    def create_fields(self) -> list[str]:
        created: list[str] = []
        group = self.options.property_group
        if group not in {g.name for g in self.client.groups()} and self._create(
            self.client.create_group, {"name": group, "label": "crmsync (AI lead score)", "displayOrder": -1}
        ):
            created.append(f"group {group}")
        existing = {p.name for p in self.client.properties()}
        for name, prop in self._mapped_outputs().items():
            if prop not in existing and self._create(self.client.create_property, definitions(name, prop, group)):
                created.append(prop)
        return created

    @staticmethod
    def _create(call: Callable[[dict[str, Any]], Any], body: dict[str, Any]) -> bool:
        try:
            call(body)
            return True
        except HubSpotRequestError as exc:
            if exc.status == 409:  # created meanwhile: fine
                return False
            raise

    # -- labels -------------------------------------------------------------------------------------
    def fetch_labels(self) -> Iterator[LabelRecord]:
        o = self.options
        decision = self.fields.review_decision
        groups = []
        if decision:
            groups.append([{"propertyName": decision, "operator": "IN", "values": list(DECISIONS)}])
        if o.converted_lifecycle_stages:
            groups.append([{"propertyName": o.stage_property, "operator": "IN", "values": list(o.converted_lifecycle_stages)}])
        if o.disqualified_property and o.disqualified_values:
            groups.append([{"propertyName": o.disqualified_property, "operator": "IN", "values": list(o.disqualified_values)}])
        if not groups:
            return
        seen: set[str] = set()
        for record in self.search.records(groups, self._read_properties(), lambda: SEARCH_PAGE):
            props = record.properties or {}
            if record.id in seen:
                continue
            seen.add(record.id)
            label = harvest_label(
                str(record.id),
                self._inputs(props),
                decision=props.get(decision) if decision else None,
                converted=one_of(props.get(o.stage_property), o.converted_lifecycle_stages),
                disqualified=bool(o.disqualified_property) and one_of(props.get(o.disqualified_property or ""), o.disqualified_values),
                modified_at=parse_time(props.get(o.modified_property)),
            )
            if label is not None:
                yield label

    def close(self) -> None:
        pass
