"""Logging set-up: one line per event on stderr (journald adds the timestamp under systemd), with every
secret's value masked (crmsync.support), whatever code path tries to print it."""

from __future__ import annotations

import logging
import os
import sys

from .support import SECRETS, redact, register_secret


class RedactSecrets(logging.Filter):
    """Masks the message (so every handler sees it masked); RedactingFormatter also masks tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if len(SECRETS):
            msg = record.getMessage()
            record.msg, record.args = redact(msg), None
        return True


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(level: str = "INFO", secret_env_vars: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    stamp = "" if os.environ.get("INVOCATION_ID") else "%(asctime)s "  # systemd's journal stamps lines itself
    handler.setFormatter(RedactingFormatter(f"{stamp}%(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    for var in secret_env_vars or []:  # masked from the first line, before any provider or connector reads them
        register_secret(os.environ.get(var))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpx2", "openai", "anthropic", "urllib3", "apscheduler.executors", "simple_salesforce"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def secret_env_vars(config: object) -> list[str]:
    """Names of every environment variable the config reads a secret from."""
    names: list[str] = []
    for p in getattr(config, "providers", {}).values():
        if getattr(p, "api_key_env", None):
            names.append(p.api_key_env)
    crm = getattr(config, "crm", None)
    for key, value in (getattr(crm, "options", {}) or {}).items():
        if key.endswith("_env") and isinstance(value, str):
            names.append(value)
        if isinstance(value, dict):
            names += [v for k, v in value.items() if k.endswith("_env") and isinstance(v, str)]
    return names
