"""The SOQL subset the Salesforce emulator understands, checked the way Salesforce checks it.

SELECT f, ... FROM Obj [WHERE cond] [ORDER BY f [ASC|DESC], ...] [LIMIT n], where cond combines
``field op literal`` and ``field [NOT] IN (literals)`` with AND / OR / NOT and parentheses.
Literals: null, true, false, numbers, 'strings', unquoted datetimes (2026-01-01T00:00:00Z).
Errors are (errorCode, message) pairs, as in ``[{"message": ..., "errorCode": ...}]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))"
    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'(?:[^'\\]|\\.)*')|(?P<op><=|>=|!=|<>|=|<|>|\(|\)|,)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)
_DATETIME_TYPES = {"datetime"}
_NUMBER_TYPES = {"double", "int", "percent", "currency"}


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Query:
    obj: str
    fields: list[str]
    where: Callable[[dict[str, Any]], bool]
    order: list[tuple[str, bool]]  # (field, descending)
    limit: int | None


def parse_datetime(text: str) -> datetime:
    text = text.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text)


def _tokens(soql: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    soql = soql.strip()
    while pos < len(soql):
        m = _TOKEN.match(soql, pos)
        if not m or m.end() == pos:
            raise SoqlError("MALFORMED_QUERY", f"unexpected character at position {pos}: {soql[pos : pos + 10]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, soql: str, schema: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.toks = _tokens(soql)
        self.i = 0
        self.schemas = schema
        self.schema: dict[str, dict[str, Any]] = {}
        self.obj = ""

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def kw(self, *words: str) -> bool:
        t = self.peek()
        if t and t[0] == "word" and t[1].upper() in words:
            self.i += 1
            return True
        return False

    def expect(self, kind: str, value: str | None = None) -> str:
        t = self.peek()
        if not t or t[0] != kind or (value is not None and t[1].upper() != value):
            got = t[1] if t else "end of query"
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{got}'")
        self.i += 1
        return t[1]

    def field(self, name: str) -> dict[str, Any]:
        for fname, spec in self.schema.items():
            if fname.lower() == name.lower():
                return spec
        raise SoqlError(
            "INVALID_FIELD",
            f"No such column '{name}' on entity '{self.obj}'. If you are attempting to use a custom field, be sure to "
            "append the '__c' after the custom field name. Please reference your WSDL or the describe call for the "
            "appropriate names.",
        )

    def parse(self) -> Query:
        self.expect("word", "SELECT")
        names = [self.expect("word")]
        while self.peek() == ("op", ","):
            self.i += 1
            names.append(self.expect("word"))
        self.expect("word", "FROM")
        self.obj = self.expect("word")
        if self.obj not in self.schemas:
            raise SoqlError("INVALID_TYPE", f"sObject type '{self.obj}' is not supported.")
        self.schema = self.schemas[self.obj]
        fields = [self.field(n)["name"] for n in names]
        where: Callable[[dict[str, Any]], bool] = self.or_expr() if self.kw("WHERE") else (lambda r: True)
        order: list[tuple[str, bool]] = []
        if self.kw("ORDER"):
            self.expect("word", "BY")
            while True:
                spec = self.field(self.expect("word"))
                if not spec.get("sortable", True):
                    raise SoqlError("INVALID_FIELD", f"field '{spec['name']}' can not be sorted in a query call")
                desc = self.kw("DESC")
                if not desc:
                    self.kw("ASC")
                order.append((spec["name"], desc))
                if self.peek() != ("op", ","):
                    break
                self.i += 1
        limit = None
        if self.kw("LIMIT"):
            limit = int(self.expect("num"))
        if self.peek() is not None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{self.peek()[1]}'")  # type: ignore[index]
        return Query(self.obj, fields, where, order, limit)

    def or_expr(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self.and_expr()]
        while self.kw("OR"):
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def and_expr(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self.not_expr()]
        while self.kw("AND"):
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def not_expr(self) -> Callable[[dict[str, Any]], bool]:
        if self.kw("NOT"):
            inner = self.not_expr()
            return lambda r: not inner(r)
        if self.peek() == ("op", "("):
            self.i += 1
            inner = self.or_expr()
            self.expect("op", ")")
            return inner
        return self.condition()

    def literal(self, spec: dict[str, Any]) -> Any:
        kind, text = self.peek() or ("", "")
        self.i += 1
        name, ftype = spec["name"], spec["type"]
        if kind == "word" and text.lower() in ("null", "true", "false"):
            return {"null": None, "true": True, "false": False}[text.lower()]
        if ftype in _DATETIME_TYPES:
            if kind == "str":
                raise SoqlError(
                    "INVALID_FIELD",
                    f"value of filter criterion for field '{name}' must be of type dateTime and should not be enclosed in quotes",
                )
            if kind != "dt":
                raise SoqlError("MALFORMED_QUERY", f"invalid dateTime literal '{text}' for field '{name}'")
            return parse_datetime(text)
        if kind == "num":
            return float(text)
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{text}'")

    def condition(self) -> Callable[[dict[str, Any]], bool]:
        spec = self.field(self.expect("word"))
        name = spec["name"]
        if not spec.get("filterable", True):
            raise SoqlError("INVALID_FIELD", f"field '{name}' can not be filtered in a query call")
        negate = self.kw("NOT")
        if self.kw("IN"):
            self.expect("op", "(")
            values = [self.literal(spec)]
            while self.peek() == ("op", ","):
                self.i += 1
                values.append(self.literal(spec))
            self.expect("op", ")")
            return lambda r: (_norm(r.get(name)) in [_norm(v) for v in values]) != negate
        if negate:
            raise SoqlError("MALFORMED_QUERY", "unexpected token: 'NOT'")
        op = self.expect("op")
        value = self.literal(spec)
        return lambda r: _compare(_norm(r.get(name)), op, _norm(value))


def _norm(v: Any) -> Any:
    if isinstance(v, str):
        return v.lower()
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return float(v)
    return v


def _compare(a: Any, op: str, b: Any) -> bool:
    if op == "=":
        return a == b
    if op in ("!=", "<>"):
        return a != b
    if a is None or b is None:
        return False
    try:
        return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
    except TypeError:
        return False


def parse(soql: str, schemas: dict[str, dict[str, dict[str, Any]]]) -> Query:
    return _Parser(soql, schemas).parse()


def sort_key(record: dict[str, Any], field: str) -> tuple[int, Any]:
    v = _norm(record.get(field))
    return (0, "") if v is None else (1, v)
