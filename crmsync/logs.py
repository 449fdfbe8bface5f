"""Logging set-up: one line per event on stderr (journald adds the timestamp under systemd), with every
configured secret's value masked, whatever code path tries to print it."""
from __future__ import annotations

import logging
import os
import sys


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            msg = record.getMessage()
            for s in self.secrets:
                msg = msg.replace(s, "***")
            record.msg, record.args = msg, None
        return True


def setup_logging(level: str = "INFO", secret_env_vars: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    stamp = "" if os.environ.get("INVOCATION_ID") else "%(asctime)s "  # systemd's journal stamps lines itself
    handler.setFormatter(logging.Formatter(f"{stamp}%(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(RedactSecrets([os.environ.get(v, "") for v in secret_env_vars or []]))
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
