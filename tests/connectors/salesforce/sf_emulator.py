"""A local emulator of the Salesforce REST API, served over HTTPS (a throw-away trustme CA), for the real
simple-salesforce client. Stdlib only, plus trustme and pyjwt.

What it does like Salesforce: SOAP and OAuth logins (password, client credentials, JWT bearer); SOQL (see
``sf_soql``) with paging through ``nextRecordsUrl`` and ``Sforce-Query-Options: batchSize`` (200–2000, default
2000, capped at 200 when two or more long text areas are selected); sObject Collections updates with per-record
errors in request order; describe; ``/limits``; the ``Sforce-Limit-Info`` header on every REST answer; 401
INVALID_SESSION_ID after ``expire_sessions()``; 403 REQUEST_LIMIT_EXCEEDED past the daily allocation; scripted
5xx answers and dropped connections. Writes bump LastModifiedDate and SystemModstamp; checkboxes are never null.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import ssl
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
import trustme

try:  # by package path (tests.connectors.salesforce...), as bench/bench_sync_calls.py imports the emulator
    from . import sf_soql
except ImportError:  # by pytest, from this folder
    import sf_soql  # type: ignore[no-redef]

USERNAME, PASSWORD, SECURITY_TOKEN = "integration@example.com", "s3cret-Pa55word", "TOKEN123abc"
CONSUMER_KEY, CONSUMER_SECRET = "3MVG9-consumer-key", "consumer-secret-XYZ"


def _f(
    name: str,
    ftype: str,
    *,
    length: int = 0,
    updateable: bool = True,
    custom: bool | None = None,
    filterable: bool = True,
    precision: int = 0,
    scale: int = 0,
) -> dict[str, Any]:
    return {
        "name": name,
        "label": name.replace("__c", "").replace("_", " "),
        "type": ftype,
        "length": length,
        "precision": precision,
        "scale": scale,
        "updateable": updateable,
        "createable": updateable,
        "nillable": ftype != "boolean",
        "custom": name.endswith("__c") if custom is None else custom,
        "filterable": filterable,
        "sortable": filterable,
        "picklistValues": [],
        **({"extraTypeInfo": "plaintextarea"} if ftype == "textarea" else {}),
    }


def lead_fields() -> list[dict[str, Any]]:
    ro = {"updateable": False}
    return [
        _f("Id", "id", length=18, **ro),
        _f("Company", "string", length=255),
        _f("Title", "string", length=128),
        _f("Status", "picklist", length=255),
        _f("IsConverted", "boolean", **ro),
        _f("ConvertedDate", "date", **ro),
        _f("Description", "textarea", length=32000, filterable=False),
        _f("Monthly_Order_Volume__c", "double", precision=18),
        _f("CreatedDate", "datetime", **ro),
        _f("LastModifiedDate", "datetime", **ro),
        _f("SystemModstamp", "datetime", **ro),
        _f("AI_Score__c", "double", precision=3),
        _f("AI_Tier__c", "string", length=10),
        _f("AI_Confidence__c", "percent", precision=3),
        _f("AI_Needs_Review__c", "boolean"),
        _f("AI_Reasons__c", "textarea", length=2000, filterable=False),
        _f("AI_Scored_At__c", "datetime"),
        _f("AI_Rubric_Version__c", "string", length=40),
        _f("AI_Model__c", "string", length=100),
        _f("AI_Review_Decision__c", "picklist", length=255),
        _f("AI_Input_Hash__c", "string", length=40),
        _f("Notes_Long__c", "textarea", length=32000, filterable=False),
    ]


def sf_datetime(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def error(code: str, message: str, fields: list[str] | None = None) -> list[dict[str, Any]]:
    return [{"message": message, "errorCode": code, **({"fields": fields} if fields is not None else {})}]


class SalesforceEmulator:
    def __init__(self, ca: trustme.CA, *, api_max: int = 15_000) -> None:
        self.schema: dict[str, dict[str, dict[str, Any]]] = {"Lead": {f["name"]: f for f in lead_fields()}}
        self.records: dict[str, dict[str, dict[str, Any]]] = {"Lead": {}}
        self.rejections: dict[str, tuple[str, str]] = {}  # id -> (statusCode, message)
        self.rejections_left: dict[str, int] = {}  # id -> how many more writes to reject (absent: every one)
        self.collections_retrieve = True  # False: an org / API version without sObject Collections retrieve (404)
        self.api_used, self.api_max = 0, api_max
        self.tokens: set[str] = set()
        self.script: list[tuple[Any, ...]] = []  # ("status", 503, code) / ("drop",) for the next REST calls
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, logins included
        self.logins = 0
        self.queries: list[str] = []  # every SOQL text received
        self.jwt_public_key: Any = None
        self.clock = datetime(2026, 1, 1, tzinfo=UTC)
        self._cursors: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.emulator = self
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.base_url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- test controls ------------------------------------------------------------------------------
    def now(self) -> datetime:
        """A clock that moves forward a millisecond per reading, starting from real time."""
        with self._lock:
            self.clock = max(self.clock + timedelta(milliseconds=1), datetime.now(UTC))
            return self.clock

    def issue_token(self) -> str:
        token = f"00D000000000001!AQ{next(self._ids):08d}"
        self.tokens.add(token)
        return token

    def expire_sessions(self) -> None:
        self.tokens.clear()

    def add(self, values: dict[str, Any], obj: str = "Lead") -> str:
        with self._lock:
            rid = f"00Q{next(self._ids):012d}AAA"
            stamp = self.now()
            rec: dict[str, Any] = {name: (False if f["type"] == "boolean" else None) for name, f in self.schema[obj].items()}
            rec.update(Id=rid, CreatedDate=stamp, LastModifiedDate=stamp, SystemModstamp=stamp, Status="Open - Not Contacted")
            rec.update(values)
            self.records[obj][rid] = rec
            return rid

    def set(self, rid: str, field: str, value: Any, obj: str = "Lead") -> None:
        with self._lock:
            stamp = self.now()
            self.records[obj][rid].update({field: value, "LastModifiedDate": stamp, "SystemModstamp": stamp})

    def remove_field(self, name: str, obj: str = "Lead") -> None:
        with self._lock:
            self.schema[obj].pop(name)
            for rec in self.records[obj].values():
                rec.pop(name, None)

    # -- the API ------------------------------------------------------------------------------------
    def limit_header(self) -> str:
        return f"api-usage={self.api_used}/{self.api_max}"

    def rest(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: Any) -> tuple[int, Any]:
        m = re.fullmatch(r"/services/data/v(\d+\.\d)/(.*?)/?", path)
        if not m:
            return 404, error("NOT_FOUND", "The requested resource does not exist")
        rest = m.group(2)
        if method == "GET" and rest == "query":
            return self._query(query.get("q", [""])[0], headers.get("Sforce-Query-Options", ""))
        if method == "GET" and rest.startswith("query/"):
            return self._query_more(rest.split("/", 1)[1])
        if method == "GET" and rest == "limits":
            return 200, {"DailyApiRequests": {"Max": self.api_max, "Remaining": max(0, self.api_max - self.api_used)}}
        dm = re.fullmatch(r"sobjects/(\w+)/describe", rest)
        if method == "GET" and dm:
            obj = dm.group(1)
            if obj not in self.schema:
                return 404, error("NOT_FOUND", "The requested resource does not exist")
            return 200, {"name": obj, "keyPrefix": "00Q", "updateable": True, "fields": list(self.schema[obj].values())}
        if method == "PATCH" and rest == "composite/sobjects":
            return self._collections(body)
        rm = re.fullmatch(r"composite/sobjects/(\w+)", rest)
        if method == "POST" and rm and self.collections_retrieve:
            return self._retrieve(rm.group(1), body)
        return 404, error("NOT_FOUND", "The requested resource does not exist")

    def _render(self, rec: dict[str, Any], obj: str, fields: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": {"type": obj, "url": f"/services/data/v59.0/sobjects/{obj}/{rec['Id']}"}}
        for name in fields:
            v = rec.get(name)
            out[name] = sf_datetime(v) if isinstance(v, datetime) else v
        return out

    def _query(self, soql: str, options: str) -> tuple[int, Any]:
        self.queries.append(soql)
        try:
            q = sf_soql.parse(soql, self.schema)
        except sf_soql.SoqlError as exc:
            return 400, error(exc.code, exc.message)
        with self._lock:
            rows = [r for r in self.records[q.obj].values() if q.where(r)]
        for name, desc in reversed(q.order):
            rows.sort(key=lambda r: sf_soql.sort_key(r, name), reverse=desc)
        rows = rows[: q.limit] if q.limit is not None else rows
        batch = 2000
        bm = re.search(r"batchSize=(\d+)", options)
        if bm:
            batch = min(2000, max(200, int(bm.group(1))))
        long_text = [f for f in q.fields if self.schema[q.obj][f]["type"] == "textarea" and self.schema[q.obj][f]["length"] > 255]
        if len(long_text) >= 2:
            batch = min(batch, 200)
        rendered = [self._render(r, q.obj, q.fields) for r in rows]
        locator = f"01g{next(self._ids):012d}"
        self._cursors[locator] = (rendered, batch)
        return 200, self._page(locator, 0)

    def _page(self, locator: str, start: int) -> dict[str, Any]:
        rows, batch = self._cursors[locator]
        done = start + batch >= len(rows)
        out: dict[str, Any] = {"totalSize": len(rows), "done": done, "records": rows[start : start + batch]}
        if not done:
            out["nextRecordsUrl"] = f"/services/data/v59.0/query/{locator}-{start + batch}"
        return out

    def _query_more(self, ident: str) -> tuple[int, Any]:
        locator, _, start = ident.partition("-")
        if locator not in self._cursors or not start.isdigit():
            return 400, error("INVALID_QUERY_LOCATOR", "invalid query locator")
        return 200, self._page(locator, int(start))

    def _collections(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return 400, error("JSON_PARSER_ERROR", "Unexpected request body; expected {allOrNone, records}")
        records = body["records"]
        if len(records) > 200:
            return 400, error("EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call")
        for rec in records:
            obj = (rec.get("attributes") or {}).get("type")
            if obj not in self.schema:
                return 400, error("INVALID_TYPE", "Must send a concrete entity type.")
            for name in rec:
                if name not in ("attributes", "id") and name not in self.schema[obj]:
                    return 400, error("INVALID_FIELD", f"No such column '{name}' on sobject of type {obj}")
        with self._lock:
            return 200, [self._update_one(rec) for rec in records]

    def _retrieve(self, obj: str, body: Any) -> tuple[int, Any]:
        """sObject Collections retrieve (POST): up to 2,000 ids; one entry per id, null where not found."""
        if obj not in self.schema:
            return 400, error("INVALID_TYPE", f"sObject type '{obj}' is not supported.")
        if not isinstance(body, dict) or not isinstance(body.get("ids"), list) or not isinstance(body.get("fields"), list):
            return 400, error("JSON_PARSER_ERROR", "Unexpected request body; expected {ids, fields}")
        if len(body["ids"]) > 2000:
            return 400, error("EXCEEDED_ID_LIMIT", "Maximum number of ids is 2000")
        names: list[str] = []
        for name in body["fields"]:
            spec = next((f for n, f in self.schema[obj].items() if n.lower() == str(name).lower()), None)
            if spec is None:
                return 400, error("INVALID_FIELD", f"No such column '{name}' on entity '{obj}'.")
            names.append(spec["name"])
        with self._lock:
            recs = [self.records[obj].get(str(i)) for i in body["ids"]]
            return 200, [self._render(r, obj, names) if r is not None else None for r in recs]

    def _update_one(self, rec: dict[str, Any]) -> dict[str, Any]:
        obj, rid = rec["attributes"]["type"], str(rec.get("id") or "")

        def fail(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
            return {"success": False, "errors": [{"statusCode": code, "message": message, "fields": fields or []}]}

        if not re.fullmatch(r"[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?", rid):
            return fail("MALFORMED_ID", f"malformed id {rid}", ["Id"])
        current = self.records[obj].get(rid)
        if current is None:
            return {"id": rid, **fail("ENTITY_IS_DELETED", "entity is deleted")}
        if rid in self.rejections and self.rejections_left.get(rid, 1) > 0:
            code, message = self.rejections[rid]
            if rid in self.rejections_left:
                self.rejections_left[rid] -= 1
            return {"id": rid, **fail(code, message)}
        if current.get("IsConverted"):
            return {"id": rid, **fail("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")}
        changes: dict[str, Any] = {}
        for name, value in rec.items():
            if name in ("attributes", "id"):
                continue
            spec = self.schema[obj][name]
            if not spec["updateable"]:
                return {"id": rid, **fail("INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {name}.", [name])}
            if spec["type"] == "boolean":
                value = bool(value)
            elif spec["type"] == "datetime" and value is not None:
                value = sf_soql.parse_datetime(value)
            elif spec["type"] in ("string", "textarea", "picklist") and value is not None and len(str(value)) > spec["length"]:
                return {"id": rid, **fail("STRING_TOO_LONG", f"{spec['label']}: data value too large", [name])}
            changes[name] = value
        stamp = self.now()
        current.update(changes, LastModifiedDate=stamp, SystemModstamp=stamp)
        return {"id": rid, "success": True, "errors": []}

    def login_soap(self, body: str) -> tuple[int, str]:
        user = re.search(r"<\w+:username>(.*?)</\w+:username>", body)
        pw = re.search(r"<\w+:password>(.*?)</\w+:password>", body)
        if user and pw and user.group(1) == USERNAME and pw.group(1) == PASSWORD + SECURITY_TOKEN:
            token = self.issue_token()
            return 200, (
                '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
                'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
                f"<serverUrl>{self.base_url}/services/Soap/u/59.0/00D000000000001</serverUrl><sessionId>{token}</sessionId>"
                "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
            )
        return 500, (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:sf="urn:fault.partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
            "<soapenv:Fault><faultcode>INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: Invalid username, password, "
            'security token; or user locked out.</faultstring><detail><sf:LoginFault xsi:type="sf:LoginFault">'
            "<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode><sf:exceptionMessage>Invalid username, password, security "
            "token; or user locked out.</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
        )

    def login_oauth(self, form: dict[str, str], authorization: str) -> tuple[int, Any]:
        grant = form.get("grant_type")
        ok = False
        if grant == "client_credentials" and authorization.startswith("Basic "):
            ok = base64.b64decode(authorization[6:]).decode() == f"{CONSUMER_KEY}:{CONSUMER_SECRET}"
        elif grant == "password":
            ok = (form.get("client_id"), form.get("client_secret"), form.get("username"), form.get("password")) == (
                CONSUMER_KEY,
                CONSUMER_SECRET,
                USERNAME,
                PASSWORD + SECURITY_TOKEN,
            )
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer" and self.jwt_public_key is not None:
            try:
                claims = jwt.decode(form.get("assertion", ""), self.jwt_public_key, algorithms=["RS256"], options={"verify_aud": False})
                ok = claims.get("iss") == CONSUMER_KEY and claims.get("sub") == USERNAME
            except jwt.PyJWTError:
                ok = False
        if not ok:
            return 400, {"error": "invalid_grant", "error_description": "authentication failure"}
        return 200, {
            "access_token": self.issue_token(),
            "instance_url": self.base_url,
            "token_type": "Bearer",
            "id": f"{self.base_url}/id/00D000000000001/005000000000001",
            "issued_at": "1767225600000",
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    emulator: SalesforceEmulator

    def handle_error(self, request: Any, client_address: Any) -> None:  # dropped sockets are expected
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json", limit: str | None = None) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type};charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        if limit:
            self.send_header("Sforce-Limit-Info", limit)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        emu = self.server.emulator
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        url = urlparse(self.path)
        with emu._lock:
            emu.requests.append((self.command, url.path))
        if url.path.startswith("/services/Soap/u/"):
            emu.logins += 1
            return self._send(*emu.login_soap(raw), content_type="text/xml")
        if url.path == "/services/oauth2/token":
            emu.logins += 1
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            return self._send(*emu.login_oauth(form, self.headers.get("Authorization", "")))
        with emu._lock:
            action = emu.script.pop(0) if emu.script else None
        if action and action[0] == "drop":
            self.close_connection = True
            return
        if action and action[0] == "status":
            return self._send(action[1], error(action[2], "scripted failure"))
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if token not in emu.tokens:
            return self._send(401, error("INVALID_SESSION_ID", "Session expired or invalid"))
        with emu._lock:
            if emu.api_used >= emu.api_max:
                return self._send(403, error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), limit=emu.limit_header())
            emu.api_used += 1
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._send(400, error("JSON_PARSER_ERROR", "malformed JSON"), limit=emu.limit_header())
        status, answer = emu.rest(self.command, url.path, parse_qs(url.query), self.headers, body)
        self._send(status, answer, limit=emu.limit_header())

    do_GET = do_POST = do_PATCH = _handle
