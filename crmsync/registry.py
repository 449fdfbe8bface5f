"""Finds plugins through entry-point groups, built-ins included: connectors (``crmsync.connectors``, the
``[crm] type``) and providers (``crmsync.providers``, each ``[providers.NAME] type``). One lookup, one set of
errors, one check that what the entry point names is the kind of plugin it claims to be.

Generic on purpose: the caller passes the base class, so this module imports no plugin contract and the
config (which validates each provider's options at load time) can use it.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import ConfigError

CONNECTORS = "crmsync.connectors"
PROVIDERS = "crmsync.providers"

_NOUN = {CONNECTORS: "connector", PROVIDERS: "provider"}
#: Built-ins whose SDK is an extra: the extra to name when the import fails.
_EXTRAS = {CONNECTORS: {"salesforce": "salesforce", "hubspot": "hubspot"}, PROVIDERS: {"llamacpp": "local"}}
_HINT = {CONNECTORS: " Salesforce and HubSpot need their extras: pip install 'crmsync[salesforce]' or 'crmsync[hubspot]'."}


class PluginError(ConfigError):
    """A ``type`` that names no usable plugin. ``reason`` is the message without the ``where = name`` part."""

    def __init__(self, where: str, name: str, reason: str) -> None:
        super().__init__(f"{where} = {name!r}: {reason}")
        self.reason = reason


def available(group: str) -> list[str]:
    """The installed names in ``group``, sorted."""
    return sorted({ep.name for ep in entry_points(group=group)})


def _entry_point(group: str, name: str, where: str) -> EntryPoint:
    matches = [ep for ep in entry_points(group=group) if ep.name == name]
    if not matches:
        installed = ", ".join(available(group)) or "none"
        raise PluginError(where, name, f"no such {_NOUN[group]}. Installed: {installed}.{_HINT.get(group, '')}")
    return matches[0]


def load_class(group: str, name: str, base: type, where: str) -> type[Any]:
    """The class registered as ``name`` in ``group``; it must subclass ``base``. ``where`` names the config key
    in errors (``[crm] type``, ``providers.fast.type``)."""
    ep = _entry_point(group, name, where)
    noun = _NOUN[group]
    try:
        cls = ep.load()
    except ImportError as exc:
        extra = _EXTRAS[group].get(name)
        fix = f"Install its extra: pip install 'crmsync[{extra}]'." if extra else "Reinstall the package that provides it."
        raise PluginError(where, name, f"the {noun} is registered but cannot be imported ({exc}). {fix}") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(where, name, f"entry point {ep.value} is not a crmsync {base.__name__}.")
    return cls
