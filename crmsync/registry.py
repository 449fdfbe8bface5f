"""Finds connectors through the ``crmsync.connectors`` entry-point group (built-ins included)."""
from __future__ import annotations

from importlib.metadata import entry_points

from .connector import Connector
from .errors import ConfigError

GROUP = "crmsync.connectors"


def available() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load_connector_class(name: str) -> type[Connector]:
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        raise ConfigError(
            f"[crm] type = {name!r}: no such connector. Installed: {', '.join(available()) or 'none'}. "
            f"Salesforce and HubSpot need their extras: pip install 'crmsync[salesforce]' or 'crmsync[hubspot]'."
        )
    try:
        cls = matches[0].load()
    except ImportError as exc:
        extra = {"salesforce": "salesforce", "hubspot": "hubspot"}.get(name, name)
        raise ConfigError(
            f"[crm] type = {name!r}: the connector is registered but cannot be imported ({exc}). "
            f"Install its extra: pip install 'crmsync[{extra}]'."
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConfigError(f"[crm] type = {name!r}: entry point {matches[0].value} is not a crmsync Connector.")
    return cls
