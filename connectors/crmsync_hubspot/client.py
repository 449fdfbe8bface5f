"""A thin wrapper over hubspot-api-client: every call goes through one budget, crmsync's one retry policy
(``crmsync.support.RetryPolicy``) and one error mapping. SDK-level retries are off (``retry=`` below), so every
retry is ours and logged."""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from hubspot import HubSpot
from hubspot.crm.objects import ApiException as ObjectsApiException
from hubspot.crm.properties import ApiException as PropertiesApiException

from crmsync import ApiBudgetExhausted, ConfigError, FatalConnectorError, RetriableConnectorError, redact, register_secret
from crmsync.support import Clock, GiveUp, RetryPolicy, parse_retry_after

from .config import HubSpotOptions
from .limiter import CallBudget

log = logging.getLogger(__name__)

#: Each SDK package has its own ApiException; these are the packages this connector calls.
API_ERRORS: tuple[type[Exception], ...] = (ObjectsApiException, PropertiesApiException)
_CAUGHT: tuple[type[Exception], ...] = (*API_ERRORS, urllib3.exceptions.HTTPError)  # and the transport's own

#: No silent urllib3 retries (the default honours Retry-After on GET 429/503 without telling anyone).
NO_SDK_RETRY = urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0, respect_retry_after_header=False, raise_on_status=False)

#: Where a 403 points: the scopes a private app needs for this connector.
SCOPES = {
    "contacts": "crm.objects.contacts.read, crm.objects.contacts.write, crm.schemas.contacts.read (and .write for `crmsync fields create`)",
    "0-136": (
        "crm.objects.leads.read, crm.objects.leads.write, crm.schemas.contacts.read "
        "(and the leads schema scopes for `crmsync fields create`)"
    ),
}
DAILY_PAUSE_S = 3600.0
LOCK_WAIT_S = 2.0  # a 423 lock lasts 2 s


class HubSpotRequestError(FatalConnectorError):
    """HubSpot refused this request itself (400, 404, 409 ...): retrying the same request will not help."""

    def __init__(self, message: str, *, status: int, category: str = "", body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.body = body or {}


class HubSpotTLSError(FatalConnectorError):
    """The server's certificate failed verification: retrying cannot help; a person must fix the trust."""


def resolve_ca_bundle(options: HubSpotOptions, base_dir: Path) -> str | None:
    """The CA file the SDK's urllib3 pool must trust, or None for the system's CAs (which honour SSL_CERT_FILE).

    The SDK ignores REQUESTS_CA_BUNDLE; we honour it (then CURL_CA_BUNDLE) as requests does, so one environment
    file serves both the HubSpot and the Salesforce connector behind a TLS-inspecting proxy.
    """
    for where, value in (
        ("[crm.options] ca_bundle", options.ca_bundle),
        ("REQUESTS_CA_BUNDLE", os.environ.get("REQUESTS_CA_BUNDLE")),
        ("CURL_CA_BUNDLE", os.environ.get("CURL_CA_BUNDLE")),
    ):
        if not value:
            continue
        p = Path(value).expanduser()
        p = p if p.is_absolute() else base_dir / p
        if not p.is_file():
            raise ConfigError(
                f"HubSpot: {where} names {p}, which is not a readable file. Point it at the PEM file of "
                "the CA to trust (a TLS-inspecting proxy's CA), or remove it to trust the system's CAs."
            )
        return str(p)
    return None


def tls_failure(exc: BaseException) -> str | None:
    """Why certificate verification failed, if that is what ``exc`` (or what it wraps) is; else None."""
    seen: list[BaseException] = []
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or any(e is s for s in seen):
            continue
        seen.append(e)
        if isinstance(e, ssl.SSLCertVerificationError):
            return str(e.verify_message or e.reason or e)
        todo += [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]
    text = str(getattr(exc, "reason", "") or exc)  # the SDK's ApiException(status=0, reason="SSLError\n...")
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return text.split("certificate verify failed:", 1)[-1].split("(_ssl.c", 1)[0].strip(" )\n") or "certificate verify failed"
    return None


class _Transient(Exception):
    """One failed attempt worth retrying: a 429, a 5xx or a dropped connection. ``retry_after`` is the wait
    HubSpot asked for (or its policy's window); None lets the retry policy back off."""

    def __init__(self, kind: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.retry_after = retry_after


def parse_body(raw: Any) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {"message": str(raw)[:300]}
    return data if isinstance(data, dict) else {}


@dataclass
class HubSpotClient:
    options: HubSpotOptions
    token: str = field(repr=False)
    clock: Clock
    calls: Counter[str] = field(default_factory=Counter)
    ca_bundle: str | None = None  # see resolve_ca_bundle

    def __post_init__(self) -> None:
        register_secret(self.token)  # masked wherever crmsync prints or stores text, however this client was built
        # ssl_ca_cert is set on every generated Configuration and reaches each urllib3 pool (API-NOTES 2.1).
        extra = {"ssl_ca_cert": self.ca_bundle} if self.ca_bundle else {}
        hs = HubSpot(access_token=self.token, host=self.options.host, retry=NO_SDK_RETRY, **extra)
        # Each discovery property builds a new ApiClient (and connection pool): build each once.
        self._search_api = hs.crm.objects.search_api
        self._batch_api = hs.crm.objects.batch_api
        self._properties_api = hs.crm.properties.core_api
        self._groups_api = hs.crm.properties.groups_api
        o = self.options
        self.budget = CallBudget(
            search_per_second=o.search_per_second, burst_per_10s=o.burst_per_10s, daily_limit=o.daily_limit, clock=self.clock
        )
        # Every wait, HubSpot's Retry-After included, is capped at max_backoff_s (clamped, not a reason to stop).
        self.retry = RetryPolicy(
            attempts=o.max_retries + 1,
            transient=lambda e: isinstance(e, _Transient),
            max_backoff_s=o.max_backoff_s,
            max_retry_after_s=o.max_backoff_s,
            clamp_retry_after=True,
            give_up=self._gave_up,
            clock=self.clock,
            name="hubspot",
        )

    # -- endpoints ----------------------------------------------------------------------------------
    def search(self, body: dict[str, Any]) -> Any:
        return self._call("search", self._search_api.do_search, self.options.object_type, body, search=True)

    def batch_read(self, ids: list[str], properties: list[str]) -> Any:
        body = {"inputs": [{"id": i} for i in ids], "properties": properties, "propertiesWithHistory": []}
        return self._call("batch_read", self._batch_api.read, self.options.object_type, body)

    def batch_update(self, inputs: list[dict[str, Any]]) -> Any:
        return self._call("batch_update", self._batch_api.update, self.options.object_type, {"inputs": inputs})

    def properties(self) -> list[Any]:
        found: list[Any] = self._call("properties_get", self._properties_api.get_all, self.options.object_type).results
        return found

    def create_property(self, body: dict[str, Any]) -> Any:
        return self._call("properties_create", self._properties_api.create, self.options.object_type, body)

    def groups(self) -> list[Any]:
        found: list[Any] = self._call("groups_get", self._groups_api.get_all, self.options.object_type).results
        return found

    def create_group(self, body: dict[str, Any]) -> Any:
        return self._call("groups_create", self._groups_api.create, self.options.object_type, body)

    # -- every call: one budget, one retry policy (crmsync.support), one error mapping ---------------
    def _call(self, kind: str, fn: Callable[..., Any], *args: Any, search: bool = False) -> Any:
        def attempt() -> Any:
            self.budget.acquire(search=search)
            self.calls[kind] += 1
            try:
                return fn(*args, _request_timeout=self.options.request_timeout_s)
            except _CAUGHT as exc:
                if (why := tls_failure(exc)) is not None:  # a certificate does not fix itself: never retried
                    raise HubSpotTLSError(
                        redact(
                            f"HubSpot: TLS certificate verification failed for {self.options.host}: {why}. If a proxy "
                            "inspects TLS, set [crm.options] ca_bundle to its CA file."
                        )
                    ) from None
                if isinstance(exc, API_ERRORS):
                    raise self.decide(kind, exc) from None
                raise _Transient(kind, type(exc).__name__) from None  # refused, reset, timed out

        return self.retry.call(attempt, kind)

    def _gave_up(self, why: GiveUp) -> Exception:
        kind = getattr(why.error, "kind", "call")
        return RetriableConnectorError(redact(f"HubSpot {kind}: {why.error}; gave up after {why.attempts} attempts. Try again later."))

    def decide(self, kind: str, exc: Any) -> Exception:
        """Mapping of one SDK exception to the error to raise: ``_Transient`` is retried (pauses the budget on
        DAILY)."""
        status = int(getattr(exc, "status", 0) or 0)
        body = parse_body(getattr(exc, "body", None))
        message = redact(str(body.get("message") or getattr(exc, "reason", "") or "no message"))
        category = str(body.get("category") or body.get("errorType") or "")
        if status == 429:
            policy = str(body.get("policyName", ""))
            if policy == "DAILY":
                self.budget.block(DAILY_PAUSE_S)
                return ApiBudgetExhausted(
                    f"HubSpot: {message} (policy DAILY). The portal's daily API limit is used up; crmsync resumes after it resets."
                )
            after = parse_retry_after(getattr(exc, "headers", None))
            window = {"SECONDLY": 1.0, "TEN_SECONDLY_ROLLING": 10.0}.get(policy)  # else: back off
            return _Transient(kind, f"429 {policy or 'rate limited'}", after if after is not None else window)
        if status == 0 or status >= 500:
            return _Transient(kind, f"{status or 'connection'} {message[:120]}")
        if status == 423:  # Locked (a burst of writes): "locks last 2 seconds", wait at least that (docs: Error handling)
            return _Transient(kind, f"423 locked {message[:120]}", LOCK_WAIT_S)
        if status == 401:
            return FatalConnectorError(
                f"HubSpot rejected the access token (401: {message}). Put a valid private app access token in the "
                f"environment variable {self.options.access_token_env}."
            )
        if status == 403:
            return FatalConnectorError(
                f"HubSpot refused {kind} (403 {category}: {message}). Grant the private app these scopes: "
                f"{SCOPES.get(self.options.object_type, SCOPES['contacts'])}."
            )
        return HubSpotRequestError(f"HubSpot {kind}: {status} {category}: {message}", status=status, category=category, body=body)
