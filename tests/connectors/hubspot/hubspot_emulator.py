"""A local emulator of the HubSpot CRM v3 API slice crmsync uses, served to the real hubspot-api-client.

HTTPS on 127.0.0.1 (a throw-away trustme CA, as the Salesforce emulator; ``ca_pem`` is its file for
``[crm.options] ca_bundle``), an ephemeral port, one thread per request. Shapes follow HubSpot's docs: search
(filterGroups, sorts, ``after`` paging, limit ≤ 200, 400 past 10,000 results, a per-second limit answering 429
SECONDLY), batch update/read (max 100, 200 / 207 / whole-batch 400 VALIDATION_ERROR), properties and groups
(409 when they exist), bearer auth (401), scopes (403), scripted 429s, and an index delay: searches see a
record's previous properties for ``index_delay_s`` after a write.
"""

from __future__ import annotations

import json
import random
import re
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

LEADS = {"leads", "0-136"}
SEARCH_CAP = 10_000


def _iso(ts: float) -> str:
    d = datetime.fromtimestamp(ts, tz=UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def _ms(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    if re.fullmatch(r"-?\d+(\.\d+)?", str(value)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return None


def prop_def(
    name: str, type_: str, field_type: str, group: str = "contactinformation", options: list[dict] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "label": name.replace("_", " ").title(),
        "type": type_,
        "fieldType": field_type,
        "groupName": group,
        "description": "",
        "options": options or [],
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": False,
        "hasUniqueValue": False,
        "hidden": False,
        "formField": True,
        "archived": False,
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": "2024-01-01T00:00:00.000Z",
        "modificationMetadata": {
            "archivable": True,
            "readOnlyDefinition": extra.pop("read_only", False),
            "readOnlyValue": extra.pop("read_only_value", False),
        },
        **extra,
    }


def _opts(*values: str) -> list[dict[str, Any]]:
    return [{"label": v.title(), "value": v, "displayOrder": i, "hidden": False} for i, v in enumerate(values)]


STANDARD_CONTACT_PROPERTIES = [
    prop_def("hs_object_id", "number", "number", read_only=True, read_only_value=True),
    prop_def("createdate", "datetime", "date", read_only_value=True),
    prop_def("lastmodifieddate", "datetime", "date", read_only_value=True),
    prop_def("hs_lastmodifieddate", "datetime", "date", read_only_value=True),
    prop_def("email", "string", "text"),
    prop_def("firstname", "string", "text"),
    prop_def("company", "string", "text"),
    prop_def("jobtitle", "string", "text"),
    prop_def(
        "lifecyclestage",
        "enumeration",
        "radio",
        options=_opts(
            "subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer", "evangelist", "other"
        ),
    ),
    prop_def("hs_lead_status", "enumeration", "radio", options=_opts("NEW", "OPEN", "IN_PROGRESS", "UNQUALIFIED", "CONNECTED")),
    prop_def(
        "hs_pipeline_stage",
        "enumeration",
        "select",
        options=_opts("new-stage-id", "attempting-stage-id", "connected-stage-id", "qualified-stage-id", "unqualified-stage-id"),
    ),
]


@dataclass
class Record:
    id: str
    props: dict[str, str]
    created: float
    history: list[tuple[float, dict[str, str]]] = field(default_factory=list)  # (written_at, props before)
    archived: bool = False


@dataclass
class Scripted:
    kind: str  # "search" | "batch_update" | "any"
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


_CA: dict[str, Any] = {}


def shared_ca() -> tuple[trustme.CA, str]:
    """One throw-away CA per test process, and its PEM file: every emulator's certificate is signed by it."""
    if not _CA:
        ca = trustme.CA()
        _CA["ca"], _CA["pem"] = ca, _write_pem(ca)
    return _CA["ca"], _CA["pem"]


def _write_pem(ca: trustme.CA) -> str:
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", prefix="hubspot-emu-ca-", delete=False) as fh:
        fh.write(ca.cert_pem.bytes())
    return fh.name


class HubSpotEmulator:
    def __init__(self, token: str = "pat-na1-emulator", *, clock: Callable[[], float] = time.time, ca: trustme.CA | None = None) -> None:
        self.token = token
        self.clock = clock
        self.scopes: set[str] | None = None  # None = every scope granted
        self.index_delay_s = 0.0
        self.batch_read_enabled = True  # False: answer batch/read with 404 (an API surface without it)
        self.search_per_second = 5
        self.search_cap = SEARCH_CAP
        self.missing_ids = "207"  # or "400": how batch update answers unknown ids (unverified upstream)
        self.validation_rules: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.scripted: deque[Scripted] = deque()
        self._search_times: deque[float] = deque()
        self._lock = threading.RLock()
        self._next_id = 100
        self.objects: dict[str, dict[str, Record]] = {"contacts": {}, "0-136": {}}
        self.properties: dict[str, dict[str, dict]] = {t: {p["name"]: dict(p) for p in STANDARD_CONTACT_PROPERTIES} for t in self.objects}
        self.groups: dict[str, dict[str, dict]] = {
            t: {"contactinformation": {"name": "contactinformation", "label": "Contact information", "displayOrder": 0, "archived": False}}
            for t in self.objects
        }
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        # TLS at the socket: HubSpotOptions refuses plain http, loopback included.
        self.ca, self.ca_pem = (ca, _write_pem(ca)) if ca else shared_ca()  # ca_pem: the file a client must trust
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> HubSpotEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- admin (what a person in the HubSpot UI would do) ---------------------------------------------
    @staticmethod
    def otype(t: str) -> str:
        return "0-136" if t in LEADS else t

    def add_property(self, object_type: str, name: str, type_: str, field_type: str, **kw: Any) -> None:
        self.properties[self.otype(object_type)][name] = prop_def(name, type_, field_type, **kw)

    def create(self, props: dict[str, Any], object_type: str = "contacts") -> str:
        with self._lock:
            self._next_id += 1
            rid = str(self._next_id)
            now = self.clock()
            values = {k: "" if v is None else str(v) for k, v in props.items()}
            values.update(hs_object_id=rid, createdate=_iso(now), lastmodifieddate=_iso(now), hs_lastmodifieddate=_iso(now))
            self.objects[self.otype(object_type)][rid] = Record(rid, values, now)
            return rid

    def update(self, rid: str, props: dict[str, Any], object_type: str = "contacts") -> None:
        with self._lock:
            rec = self.objects[self.otype(object_type)][rid]
            now = self.clock()
            rec.history.append((now, dict(rec.props)))
            rec.props.update({k: "" if v is None else str(v) for k, v in props.items()})
            rec.props["lastmodifieddate"] = rec.props["hs_lastmodifieddate"] = _iso(now)

    def delete(self, rid: str, object_type: str = "contacts") -> None:
        with self._lock:
            del self.objects[self.otype(object_type)][rid]

    def get(self, rid: str, object_type: str = "contacts") -> dict[str, str]:
        return dict(self.objects[self.otype(object_type)][rid].props)

    def settle(self) -> None:
        """Let the search index catch up with every write."""
        with self._lock:
            for store in self.objects.values():
                for rec in store.values():
                    rec.history.clear()

    def script_429(self, policy: str, *, kind: str = "any", times: int = 1, retry_after: float | None = None) -> None:
        body = {
            "status": "error",
            "message": f"You have reached your {policy.lower()} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
        }
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        for _ in range(times):
            self.scripted.append(Scripted(kind, 429, body, headers))

    def script_error(self, status: int, body: dict[str, Any], *, kind: str = "any", times: int = 1) -> None:
        for _ in range(times):
            self.scripted.append(Scripted(kind, status, body, {}))

    # -- search semantics ---------------------------------------------------------------------------
    def _indexed(self, rec: Record, now: float) -> dict[str, str]:
        """The properties search sees: the version from before any write newer than the index delay."""
        for written_at, before in rec.history:
            if now - written_at < self.index_delay_s:
                return before
        return rec.props

    def _value_matches(self, ptype: str, have: str | None, op: str, f: dict[str, Any]) -> bool:
        present = have not in (None, "")
        if op == "HAS_PROPERTY":
            return present
        if op == "NOT_HAS_PROPERTY":
            return not present
        if have is None or not present:
            return False  # comparisons (NEQ, NOT_IN included) need a value
        if op in ("IN", "NOT_IN"):
            found = str(have).lower() in {str(v).lower() for v in f.get("values", [])}
            return found if op == "IN" else not found
        want: Any = f.get("value")
        a: Any  # numbers, epoch milliseconds or lower-cased text, by the property's type
        b: Any
        if ptype == "number":
            a, b = float(have), float(want)
        elif ptype in ("datetime", "date"):
            a, b = _ms(have), _ms(want)
        else:
            a, b = str(have).lower(), str(want).lower()
        return {"EQ": a == b, "NEQ": a != b, "GT": a > b, "GTE": a >= b, "LT": a < b, "LTE": a <= b}[op]

    def search(self, otype: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        limit = int(body.get("limit") or 10)
        after = int(body.get("after") or 0)
        groups = body.get("filterGroups") or []
        nfilters = sum(len(g.get("filters", [])) for g in groups)
        if limit > 200 or limit < 1:
            return 400, _validation(f"limit must be between 1 and 200 (got {limit})")
        if len(groups) > 5 or nfilters > 18 or any(len(g.get("filters", [])) > 6 for g in groups):
            return 400, _validation("Too many filters: at most 5 filterGroups, 6 filters each, 18 in total.")
        if after + limit > self.search_cap:
            return 400, _validation(f"The request exceeded the {self.search_cap} result limit. Use fewer results or a narrower query.")
        defs = self.properties[otype]
        for g in groups:
            for f in g.get("filters", []):
                if f["propertyName"] not in defs:
                    return 400, _validation(f"There was a problem with the request: Property {f['propertyName']} does not exist")
        now = self.clock()
        with self._lock:
            views = [(rec, self._indexed(rec, now)) for rec in self.objects[otype].values()]

        def match(props: dict[str, str]) -> bool:
            if not groups:
                return True
            return any(
                all(
                    self._value_matches(defs[f["propertyName"]]["type"], props.get(f["propertyName"]), f["operator"], f)
                    for f in g.get("filters", [])
                )
                for g in groups
            )

        hits = [(rec, p) for rec, p in views if match(p)]
        if any((s["propertyName"] if isinstance(s, dict) else str(s)) != "hs_object_id" for s in body.get("sorts") or []):
            random.Random(len(hits)).shuffle(hits)  # search promises no order among ties of its one sort property
        for s in reversed(body.get("sorts") or [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]):
            name = s["propertyName"] if isinstance(s, dict) else str(s)
            numeric = defs.get(name, {}).get("type") in ("number", "datetime", "date")
            key = (lambda rp, n=name: _ms(rp[1].get(n)) or 0) if numeric else (lambda rp, n=name: rp[1].get(n) or "")
            hits.sort(key=key, reverse=isinstance(s, dict) and s.get("direction") == "DESCENDING")
        page = hits[after : after + limit]
        wanted = set(body.get("properties") or ["email", "firstname", "lastname"]) | {"hs_object_id", "createdate", "lastmodifieddate"}
        out: dict[str, Any] = {"total": len(hits), "results": [self._public(rec, p, wanted) for rec, p in page]}
        if after + limit < len(hits):
            out["paging"] = {"next": {"after": str(after + limit), "link": "?after=" + str(after + limit)}}
        return 200, out

    @staticmethod
    def _public(rec: Record, props: dict[str, str], wanted: set[str]) -> dict[str, Any]:
        return {
            "id": rec.id,
            "properties": {k: (props.get(k) or None) for k in sorted(wanted)},
            "createdAt": _iso(rec.created),
            "updatedAt": props.get("lastmodifieddate") or _iso(rec.created),
            "archived": False,
        }

    # -- batch semantics ----------------------------------------------------------------------------
    def _invalid(self, defs: dict[str, dict], name: str, value: str) -> dict[str, Any] | None:
        d = defs.get(name)
        if d is None:
            return {"isValid": False, "message": f'Property "{name}" does not exist', "error": "PROPERTY_DOESNT_EXIST", "name": name}
        if d["modificationMetadata"].get("readOnlyValue"):
            return {
                "isValid": False,
                "message": f'"{name}" is a read only property; its value cannot be set.',
                "error": "READ_ONLY_VALUE",
                "name": name,
            }
        if value == "":
            return None
        t = d["type"]
        bad = (
            (t == "number" and not re.fullmatch(r"-?\d+(\.\d+)?", value))
            or (t == "bool" and value not in ("true", "false"))
            or (t in ("datetime", "date") and _ms(value) is None)
            or (t == "enumeration" and d["options"] and value not in {o["value"] for o in d["options"]})
        )
        if bad:
            return {
                "isValid": False,
                "message": f"{value} was not a valid {t}.",
                "error": "INVALID_OPTION" if t == "enumeration" else f"INVALID_{t.upper()}",
                "name": name,
            }
        return None

    def batch_update(self, otype: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        inputs = body.get("inputs") or []
        if len(inputs) > 100:
            return 400, _validation(f"Batch size {len(inputs)} exceeds the maximum of 100 inputs.")
        ids = [str(i["id"]) for i in inputs]
        if len(set(ids)) != len(ids):
            return 400, _validation("Duplicate IDs found in batch input: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1})))
        defs, store = self.properties[otype], self.objects[otype]
        problems = [p for i in inputs for k, v in i.get("properties", {}).items() if (p := self._invalid(defs, k, str(v)))]
        if problems:
            return 400, _validation("Property values were not valid: " + json.dumps(problems[:10]))
        for rid in ids:
            if rid in self.validation_rules and rid in store:
                problem = {"isValid": False, "message": self.validation_rules[rid], "error": "VALIDATION_RULE", "name": "id " + rid}
                return 400, _validation(f"Property values were not valid: {json.dumps([problem])}")
        missing = [rid for rid in ids if rid not in store]
        if missing and self.missing_ids == "400":
            return 400, _validation(f"Object IDs not found: {', '.join(missing)}", category="OBJECT_NOT_FOUND")
        started = _iso(self.clock())
        results = []
        for i in inputs:
            rid = str(i["id"])
            if rid in store:
                self.update(rid, i.get("properties", {}), otype)
                rec = store[rid]
                results.append(
                    self._public(rec, rec.props, set(i.get("properties", {})) | {"hs_object_id", "lastmodifieddate", "createdate"})
                )
        out: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": _iso(self.clock())}
        if missing:
            message = (
                f"Could not get some {'CONTACT' if otype == 'contacts' else 'LEAD'} objects, "
                "they may be deleted or not exist. Check that ids are valid."
            )
            out.update(
                numErrors=1,
                errors=[
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": message,
                        "context": {"ids": missing},
                        "errors": [],
                        "links": {},
                    }
                ],
            )
            return 207, out
        return 200, out

    def batch_read(self, otype: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        inputs = body.get("inputs") or []
        if len(inputs) > 100:
            return 400, _validation("Batch size exceeds the maximum of 100 inputs.")
        store = self.objects[otype]
        wanted = set(body.get("properties") or []) | {"hs_object_id", "createdate", "lastmodifieddate"}
        found = [self._public(store[str(i["id"])], store[str(i["id"])].props, wanted) for i in inputs if str(i["id"]) in store]
        missing = [str(i["id"]) for i in inputs if str(i["id"]) not in store]
        out: dict[str, Any] = {"status": "COMPLETE", "results": found, "startedAt": _iso(self.clock()), "completedAt": _iso(self.clock())}
        if missing:
            out.update(
                numErrors=1,
                errors=[
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": "Could not get some objects, they may be deleted or not exist.",
                        "context": {"ids": missing},
                        "errors": [],
                        "links": {},
                    }
                ],
            )
            return 207, out
        return 200, out

    # -- properties -----------------------------------------------------------------------------------
    def create_property(self, otype: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body.get("name", "")
        if name in self.properties[otype]:
            return 409, _error(f"Property named '{name}' already exists.", "OBJECT_ALREADY_EXISTS")
        if body.get("groupName") not in self.groups[otype]:
            return 400, _validation(f"Property group '{body.get('groupName')}' does not exist.")
        valid = {
            "number": {"number"},
            "bool": {"booleancheckbox"},
            "enumeration": {"select", "radio", "checkbox", "booleancheckbox"},
            "string": {"text", "textarea"},
            "datetime": {"date"},
            "date": {"date"},
        }
        if body.get("fieldType") not in valid.get(body.get("type", ""), set()):
            return 400, _validation(f"Invalid type/fieldType combination {body.get('type')}/{body.get('fieldType')}.")
        p = prop_def(name, body["type"], body["fieldType"], group=body["groupName"], options=body.get("options"))
        p.update(label=body.get("label", name), description=body.get("description", ""))
        self.properties[otype][name] = p
        return 201, p

    def create_group(self, otype: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body.get("name", "")
        if name in self.groups[otype]:
            return 409, _error(f"A property group named '{name}' already exists.", "OBJECT_ALREADY_EXISTS")
        g = {"name": name, "label": body.get("label", name), "displayOrder": body.get("displayOrder", -1), "archived": False}
        self.groups[otype][name] = g
        return 201, g

    # -- HTTP -------------------------------------------------------------------------------------------
    ROUTES = (
        ("POST", r"/crm/v3/objects/([^/]+)/search", "search", "read"),
        ("POST", r"/crm/v3/objects/([^/]+)/batch/update", "batch_update", "write"),
        ("POST", r"/crm/v3/objects/([^/]+)/batch/read", "batch_read", "read"),
        ("GET", r"/crm/v3/properties/([^/]+)/groups", "groups_get", "schema_read"),
        ("POST", r"/crm/v3/properties/([^/]+)/groups", "groups_create", "schema_write"),
        ("GET", r"/crm/v3/properties/([^/]+)", "properties_get", "schema_read"),
        ("GET", r"/crm/v3/properties/([^/]+)/([^/]+)", "property_get", "schema_read"),
        ("POST", r"/crm/v3/properties/([^/]+)", "properties_create", "schema_write"),
    )

    def _scope(self, otype: str, need: str) -> str:
        obj = "contacts" if otype == "contacts" else "leads"
        return {
            "read": f"crm.objects.{obj}.read",
            "write": f"crm.objects.{obj}.write",
            "schema_read": f"crm.schemas.{obj}.read",
            "schema_write": f"crm.schemas.{obj}.write",
        }[need]

    def handle(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, dict[str, Any] | list, dict[str, str]]:
        path = path.split("?", 1)[0]
        for m, pattern, kind, need in self.ROUTES:  # noqa: B007 -- kind and need are read after the break
            match = re.fullmatch(pattern, path)
            if m == method and match:
                break
        else:
            return 404, _error(f"Unable to route {method} {path}", "OBJECT_NOT_FOUND"), {}
        with self._lock:
            self.calls[kind] += 1
            self.requests.append({"kind": kind, "method": method, "path": path})
        if headers.get("Authorization") != f"Bearer {self.token}":
            return (
                401,
                {
                    "status": "error",
                    "message": (
                        "Authentication credentials not found. This API supports OAuth 2.0 authentication "
                        "and you can find more details at "
                        "https://developers.hubspot.com/docs/methods/auth/oauth-overview"
                    ),
                    "correlationId": str(uuid.uuid4()),
                    "category": "INVALID_AUTHENTICATION",
                },
                {},
            )
        otype = self.otype(match.group(1))
        if otype not in self.objects:
            return 400, _validation(f"Unable to infer object type from: {match.group(1)}"), {}
        scope = self._scope(otype, need)
        if self.scopes is not None and scope not in self.scopes:
            return (
                403,
                {
                    "status": "error",
                    "message": "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
                    "correlationId": str(uuid.uuid4()),
                    "errors": [
                        {"message": "One or more of the following scopes are required.", "context": {"requiredGranularScopes": [scope]}}
                    ],
                    "links": {"scopes": "https://developers.hubspot.com/scopes"},
                    "category": "MISSING_SCOPES",
                },
                {},
            )
        with self._lock:
            for s in list(self.scripted):
                if s.kind in ("any", kind):
                    self.scripted.remove(s)
                    self.rate_limited[kind] += 1
                    return s.status, {**s.body, "correlationId": str(uuid.uuid4())}, s.headers
            if kind == "search":
                now = self.clock()
                while self._search_times and now - self._search_times[0] >= 1.0:
                    self._search_times.popleft()
                if len(self._search_times) >= self.search_per_second:
                    self.rate_limited[kind] += 1
                    return (
                        429,
                        {
                            "status": "error",
                            "message": "You have reached your secondly limit.",
                            "errorType": "RATE_LIMIT",
                            "correlationId": str(uuid.uuid4()),
                            "policyName": "SECONDLY",
                        },
                        {},
                    )
                self._search_times.append(now)
        body = json.loads(raw or b"{}") if method == "POST" else {}
        with self._lock:
            if kind == "search":
                status, out = self.search(otype, body)
            elif kind == "batch_update":
                status, out = self.batch_update(otype, body)
            elif kind == "batch_read":
                status, out = self.batch_read(otype, body) if self.batch_read_enabled else (404, _error("Not found", "OBJECT_NOT_FOUND"))
            elif kind == "properties_get":
                status, out = 200, {"results": list(self.properties[otype].values())}
            elif kind == "property_get":
                p = self.properties[otype].get(match.group(2))
                status, out = (200, p) if p else (404, _error(f"Unable to find property {match.group(2)}", "OBJECT_NOT_FOUND"))
            elif kind == "properties_create":
                status, out = self.create_property(otype, body)
            elif kind == "groups_get":
                status, out = 200, {"results": list(self.groups[otype].values())}
            else:
                status, out = self.create_group(otype, body)
        return status, out, {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emu = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _do(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, body, headers = emu.handle(self.command, self.path, self.headers, raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _do

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _error(message: str, category: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category}


def _validation(message: str, category: str = "VALIDATION_ERROR") -> dict[str, Any]:
    return _error(message, category)
