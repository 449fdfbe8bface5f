"""Talking to Salesforce through simple-salesforce: the HTTP session, logging in, bounded retries of 5xx and
dropped connections, mapping SDK errors onto crmsync's taxonomy, and the API budget.

Re-login: simple-salesforce itself replays a request once it has logged in again after a 401
INVALID_SESSION_ID, for every credentials mode. A bare access token cannot be renewed: that 401 stops the CRM's
work with a message saying what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceRefusedRequest,
)

from crmsync import ApiBudgetExhausted, FatalConnectorError, RetriableConnectorError, redact, require_env
from crmsync.support import SYSTEM_CLOCK, Clock, RetryPolicy

from .config import AccessTokenAuth, ClientCredentialsAuth, JwtAuth, PasswordAuth, SalesforceOptions

log = logging.getLogger("crmsync.salesforce")
T = TypeVar("T")

TOKEN_EXPIRED_HELP = (
    "Salesforce rejected the access token in {env} (INVALID_SESSION_ID: expired or revoked). crmsync cannot renew a "
    "bare access token. Mint a new one (for example `sf org display --target-org <alias> --verbose`, copy 'Access "
    'Token\' into {env}) and restart crmsync; or switch [crm.options.auth] to mode = "client_credentials" or '
    '"jwt" so crmsync can log in again by itself.'
)


class ConfiguredSession(requests.Session):
    """A requests session with a default timeout and, if configured, a pinned CA bundle.

    The CA goes on each request (not ``Session.verify``) so ``REQUESTS_CA_BUNDLE`` cannot override it, while
    ``trust_env`` stays on for proxy settings.
    """

    def __init__(self, timeout_s: float, ca_bundle: str | None) -> None:
        super().__init__()
        self.timeout_s = timeout_s
        self.ca_bundle = ca_bundle

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout_s)
        if self.ca_bundle and kwargs.get("verify") is None:
            kwargs["verify"] = self.ca_bundle
        return super().request(method, url, *args, **kwargs)


def make_session(options: SalesforceOptions, base_dir: Path) -> ConfiguredSession:
    ca = None
    if options.ca_bundle:
        p = Path(options.ca_bundle).expanduser()
        ca = str(p if p.is_absolute() else base_dir / p)
    return ConfiguredSession(options.request_timeout_s, ca)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    if isinstance(exc, SalesforceAuthenticationFailed):  # a login answered by a 5xx page, not by a login fault
        return isinstance(exc.code, int) and exc.code >= 500
    return isinstance(exc, SalesforceGeneralError) and int(getattr(exc, "status", 0) or 0) >= 500


def _error_code(exc: SalesforceError) -> tuple[str, str]:
    content = getattr(exc, "content", None)
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("errorCode", "")), str(content[0].get("message", ""))
    return "", str(content or "")[:300]


class SalesforceClient:
    """One logged-in simple-salesforce client plus the policies around each call."""

    def __init__(self, options: SalesforceOptions, base_dir: Path, session: requests.Session, clock: Clock = SYSTEM_CLOCK) -> None:
        self.options = options
        self.base_dir = base_dir
        self.session = session
        # 5xx and dropped connections only (Salesforce sends no Retry-After); the rest is mapped in ``call``.
        self.retry = RetryPolicy(
            attempts=options.max_retries + 1,
            transient=_is_transient,
            backoff_s=options.retry_base_s,
            max_backoff_s=30.0,
            clock=clock,
            name="salesforce",
        )
        self.sf = self._login()

    # -- auth ---------------------------------------------------------------------------------------
    def _secret(self, env: str) -> str:
        return require_env(env, "[crm.options.auth] (Salesforce)")  # registered for crmsync.redact

    def _login(self) -> Salesforce:
        o, auth = self.options, self.options.auth
        common: dict[str, Any] = {"session": self.session, "version": o.api_version, "domain": o.domain}
        kwargs: dict[str, Any]
        if isinstance(auth, AccessTokenAuth):
            kwargs = {"session_id": self._secret(auth.access_token_env), "instance_url": o.instance_url}
        elif isinstance(auth, ClientCredentialsAuth):
            kwargs = {"consumer_key": self._secret(auth.consumer_key_env), "consumer_secret": self._secret(auth.consumer_secret_env)}
        elif isinstance(auth, PasswordAuth):
            token = self._secret(auth.security_token_env) if auth.security_token_env else ""
            kwargs = {"username": auth.username, "password": self._secret(auth.password_env), "security_token": token}
        elif isinstance(auth, JwtAuth):
            kwargs = {"username": auth.username, "consumer_key": self._secret(auth.consumer_key_env)}
            if auth.private_key_file:
                p = Path(auth.private_key_file).expanduser()
                kwargs["privatekey_file"] = str(p if p.is_absolute() else self.base_dir / p)
            else:
                kwargs["privatekey"] = self._secret(auth.private_key_env or "")
            if o.instance_url:
                kwargs["instance_url"] = o.instance_url.removeprefix("https://").removesuffix(".salesforce.com").rstrip("/")
        else:  # pragma: no cover - the discriminated union is exhaustive
            raise FatalConnectorError(f"Salesforce: unknown auth mode {auth!r}")
        return self.call(lambda: Salesforce(**common, **kwargs), "login")

    @property
    def can_relogin(self) -> bool:
        return not isinstance(self.options.auth, AccessTokenAuth)

    # -- calls --------------------------------------------------------------------------------------
    def call(self, fn: Callable[[], T], what: str) -> T:
        """Run one API call: retry transient failures (bounded), map the rest onto crmsync errors."""
        attempts = self.retry.attempts
        try:
            return self.retry.call(fn, what)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RetriableConnectorError(
                f"Salesforce {what}: no answer after {attempts} attempts ({type(exc).__name__}); will try again later"
            ) from None
        except SalesforceAuthenticationFailed as exc:
            if _is_transient(exc):
                raise RetriableConnectorError(
                    f"Salesforce login: HTTP {exc.code} after {attempts} attempts; will try again later"
                ) from None
            raise FatalConnectorError(
                redact(
                    f"Salesforce login failed ({exc.code}: {exc.auth_message}). Check the credentials named in "
                    f"[crm.options.auth] and `domain` = {self.options.domain!r}."
                )
            ) from None
        except SalesforceExpiredSession:
            if not self.can_relogin:
                env = getattr(self.options.auth, "access_token_env", "SF_ACCESS_TOKEN")
                raise FatalConnectorError(TOKEN_EXPIRED_HELP.format(env=env)) from None
            raise FatalConnectorError(
                "Salesforce keeps refusing new sessions (INVALID_SESSION_ID after re-login); check the integration user"
            ) from None
        except SalesforceRefusedRequest as exc:
            code, message = _error_code(exc)
            if code == "REQUEST_LIMIT_EXCEEDED":
                raise ApiBudgetExhausted(
                    f"Salesforce org's daily API allocation is used up (REQUEST_LIMIT_EXCEEDED: {message}); "
                    "crmsync starts no new work until usage drops (rolling 24 h)."
                ) from None
            raise FatalConnectorError(
                redact(f"Salesforce {what} refused ({code}: {message}); check the integration user's permissions")
            ) from None
        except SalesforceGeneralError as exc:
            code, message = _error_code(exc)
            if exc.status >= 500:
                raise RetriableConnectorError(
                    f"Salesforce {what}: HTTP {exc.status} {code} after {attempts} attempts; will try again later"
                ) from None
            raise FatalConnectorError(redact(f"Salesforce {what} failed: HTTP {exc.status} {code}: {message}")) from None
        except SalesforceError as exc:
            code, message = _error_code(exc)
            raise FatalConnectorError(redact(f"Salesforce {what} failed: HTTP {exc.status} {code}: {message}")) from None

    # -- budget -------------------------------------------------------------------------------------
    def usage(self) -> tuple[int, int] | None:
        u = self.sf.api_usage.get("api-usage")
        return (u.used, u.total) if u is not None and u.total else None

    def ensure_budget(self) -> None:
        """Raise ApiBudgetExhausted if usage is past our configured share.

        The last ``Sforce-Limit-Info`` header is free to read; when it says we are over, one ``limits`` call
        refreshes it before refusing, so a long-running daemon notices when the rolling 24 h usage drops.
        """
        usage = self.usage()
        if usage is None:
            return
        share = self.options.max_api_share
        if usage[0] >= share * usage[1]:
            self.call(lambda: self.sf.limits(), "limits")
            usage = self.usage() or usage
        used, total = usage
        if used >= share * total:
            raise ApiBudgetExhausted(
                f"Salesforce API budget: the org has used {used}/{total} daily API requests ({used / total:.0%}), past "
                f"crmsync's share max_api_share = {share:g}; no new work until usage drops (rolling 24 h). Raise "
                "[crm.options] max_api_share only if the org's other integrations can spare it."
            )
