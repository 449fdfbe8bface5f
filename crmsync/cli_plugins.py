"""`crmsync plugins`: which connectors and providers are installed, from which package, and whether each loads.

An admin adding a third-party provider or CRM sees here, before editing the config, the exact `type` name to use
and, when an extra is missing, the pip command that fixes it."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import click
from rich.table import Table
from rich.text import Text

from . import registry
from .connector import Connector
from .console import out
from .providers.base import Provider

_KINDS = ((registry.CONNECTORS, Connector, "[crm] type"), (registry.PROVIDERS, Provider, "[providers.NAME] type"))


def _package(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.metadata['Name']} {dist.version}" if dist is not None else "?"


def _status(group: str, ep: EntryPoint, base: type, where: str) -> tuple[bool, str]:
    try:
        registry.load_class(group, ep.name, base, where)
    except registry.PluginError as exc:
        return False, exc.reason
    return True, "ok"


@click.command()
def plugins() -> None:
    """List installed connectors and providers: the `type` to use, the package, and whether it loads."""
    table = Table(show_header=True, header_style="bold")
    for col in ("kind", "type", "entry point", "package", "status"):
        table.add_column(col, overflow="fold")
    broken = 0
    for group, base, where in _KINDS:
        kind = "connector" if group == registry.CONNECTORS else "provider"
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            ok, status = _status(group, ep, base, where)
            broken += not ok
            table.add_row(kind, ep.name, ep.value, _package(ep), Text(status, style="" if ok else "red"))  # no markup: "crmsync[local]"
    out.print(table)
    if broken:
        out.print(
            f"{broken} plugin(s) cannot be loaded; a config that names one is refused with the same message.",
            style="yellow",
            markup=False,
            highlight=False,
        )
