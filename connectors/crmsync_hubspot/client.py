"""A thin wrapper over hubspot-api-client: every call goes through one budget, one retry loop and one error
mapping. SDK-level retries are off (``retry=`` below), so every retry is ours and logged."""
from __future__ import annotations

import json
import logging
import os
import random
import ssl
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import urllib3
from hubspot import HubSpot
from hubspot.crm.objects import ApiException as ObjectsApiException
from hubspot.crm.properties import ApiException as PropertiesApiException

from crmsync import ApiBudgetExhausted, ConfigError, FatalConnectorError, RetriableConnectorError, redact, register_secret

from .config import HubSpotOptions
from .limiter import CallBudget, Clock

log = logging.getLogger(__name__)

#: Each SDK package has its own ApiException; these are the packages this connector calls.
API_ERRORS: tuple[type[Exception], ...] = (ObjectsApiException, PropertiesApiException)

#: No silent urllib3 retries (the default honours Retry-After on GET 429/503 without telling anyone).
NO_SDK_RETRY = urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0, respect_retry_after_header=False, raise_on_status=False)

#: Where a 403 points: the scopes a private app needs for this connector.
SCOPES = {
    "contacts": "crm.objects.contacts.read, crm.objects.contacts.write, crm.schemas.contacts.read (and .write for `crmsync fields create`)",
    "0-136": "crm.objects.leads.read, crm.objects.leads.write, crm.schemas.contacts.read (and the leads schema scopes for `crmsync fields create`)",
}
DAILY_PAUSE_S = 3600.0


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
    for where, value in (("[crm.options] ca_bundle", options.ca_bundle),
                         ("REQUESTS_CA_BUNDLE", os.environ.get("REQUESTS_CA_BUNDLE")),
                         ("CURL_CA_BUNDLE", os.environ.get("CURL_CA_BUNDLE"))):
        if not value:
            continue
        p = Path(value).expanduser()
        p = p if p.is_absolute() else base_dir / p
        if not p.is_file():
            raise ConfigError(f"HubSpot: {where} names {p}, which is not a readable file. Point it at the PEM file of "
                              "the CA to trust (a TLS-inspecting proxy's CA), or remove it to trust the system's CAs.")
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


@dataclass(frozen=True)
class Decision:
    """What to do after one failed attempt: wait ``delay`` seconds and retry, or raise ``error``."""

    reason: str
    delay: float | None = None
    error: Exception | None = None


def parse_body(raw: Any) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {"message": str(raw)[:300]}
    return data if isinstance(data, dict) else {}


def _retry_after(headers: Any) -> float | None:
    try:
        value = (headers or {}).get("Retry-After")
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError, AttributeError):
        return None


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

    # -- endpoints ----------------------------------------------------------------------------------
    def search(self, body: dict[str, Any]) -> Any:
        return self._call("search", self._search_api.do_search, self.options.object_type, body, search=True)

    def batch_read(self, ids: list[str], properties: list[str]) -> Any:
        body = {"inputs": [{"id": i} for i in ids], "properties": properties, "propertiesWithHistory": []}
        return self._call("batch_read", self._batch_api.read, self.options.object_type, body)

    def batch_update(self, inputs: list[dict[str, Any]]) -> Any:
        return self._call("batch_update", self._batch_api.update, self.options.object_type, {"inputs": inputs})

    def properties(self) -> list[Any]:
        return self._call("properties_get", self._properties_api.get_all, self.options.object_type).results

    def create_property(self, body: dict[str, Any]) -> Any:
        return self._call("properties_create", self._properties_api.create, self.options.object_type, body)

    def groups(self) -> list[Any]:
        return self._call("groups_get", self._groups_api.get_all, self.options.object_type).results

    def create_group(self, body: dict[str, Any]) -> Any:
        return self._call("groups_create", self._groups_api.create, self.options.object_type, body)

    # -- the one retry loop -------------------------------------------------------------------------
    def _call(self, kind: str, fn: Callable[..., Any], *args: Any, search: bool = False) -> Any:
        attempts = self.options.max_retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            self.budget.acquire(search=search)
            self.calls[kind] += 1
            try:
                return fn(*args, _request_timeout=self.options.request_timeout_s)
            except (*API_ERRORS, urllib3.exceptions.HTTPError) as exc:
                if (why := tls_failure(exc)) is not None:  # a certificate does not fix itself: never retried
                    raise HubSpotTLSError(redact(
                        f"HubSpot: TLS certificate verification failed for {self.options.host}: {why}. If a proxy "
                        "inspects TLS, set [crm.options] ca_bundle to its CA file.")) from None
                if isinstance(exc, API_ERRORS):
                    decision = self.decide(kind, exc, attempt)
                else:  # refused, reset, timed out
                    decision = Decision(f"{type(exc).__name__}", delay=self._backoff(attempt))
            if decision.error is not None:
                raise decision.error
            last = decision.reason
            if attempt == attempts:
                break
            delay = min(decision.delay or 0.0, self.options.max_backoff_s)
            log.debug("hubspot %s: attempt %d/%d failed (%s); retrying in %.2fs", kind, attempt, attempts, last, delay)
            self.clock.sleep(delay)
        raise RetriableConnectorError(self.redact(f"HubSpot {kind}: {last}; gave up after {attempts} attempts. Try again later."))

    def _backoff(self, attempt: int) -> float:
        return min(0.5 * 2 ** (attempt - 1), self.options.max_backoff_s) * random.uniform(0.75, 1.0)

    def decide(self, kind: str, exc: Any, attempt: int) -> Decision:
        """Pure mapping of one SDK exception to retry-or-raise (pauses the budget on DAILY)."""
        status = int(getattr(exc, "status", 0) or 0)
        body = parse_body(getattr(exc, "body", None))
        message = self.redact(str(body.get("message") or getattr(exc, "reason", "") or "no message"))
        category = str(body.get("category") or body.get("errorType") or "")
        if status == 429:
            policy = str(body.get("policyName", ""))
            if policy == "DAILY":
                self.budget.block(DAILY_PAUSE_S)
                return Decision("429 DAILY", error=ApiBudgetExhausted(f"HubSpot: {message} (policy DAILY). The portal's daily API limit is used up; crmsync resumes after it resets."))
            default = {"SECONDLY": 1.0, "TEN_SECONDLY_ROLLING": 10.0}.get(policy, self._backoff(attempt))
            after = _retry_after(getattr(exc, "headers", None))
            return Decision(f"429 {policy or 'rate limited'}", delay=after if after is not None else default)
        if status == 0 or status >= 500:
            return Decision(f"{status or 'connection'} {message[:120]}", delay=self._backoff(attempt))
        if status == 401:
            return Decision("401", error=FatalConnectorError(
                f"HubSpot rejected the access token (401: {message}). Put a valid private app access token in the "
                f"environment variable {self.options.access_token_env}."))
        if status == 403:
            return Decision("403", error=FatalConnectorError(
                f"HubSpot refused {kind} (403 {category}: {message}). Grant the private app these scopes: "
                f"{SCOPES.get(self.options.object_type, SCOPES['contacts'])}."))
        return Decision(str(status), error=HubSpotRequestError(
            f"HubSpot {kind}: {status} {category}: {message}", status=status, category=category, body=body))

    def redact(self, text: str) -> str:
        return redact(text)  # the token was registered by require_env
