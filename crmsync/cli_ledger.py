"""`crmsync ledger backup|rebuild`: keep and restore the ledger."""

from __future__ import annotations

from pathlib import Path

import click

from .console import config_option, hold_state_dir, load_for_command, open_ledger, out

_load = load_for_command
_ledger = open_ledger


@click.group()
def ledger() -> None:
    """Back up and recover the ledger (README, Operations: Recovery)."""


@ledger.command("backup")
@config_option
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
def ledger_backup(config_path: Path | None, dest: Path) -> None:
    """Copy the ledger to DEST with SQLite's online backup: safe while crmsync runs, so it takes no lock."""
    config = _load(config_path, "WARNING")
    source = _ledger(config)
    try:
        size = source.backup(dest)
    finally:
        source.close()
    out.print(f"ledger {source.path} backed up to {dest} ({size} bytes)", markup=False, highlight=False, soft_wrap=True)


@ledger.command("rebuild")
@config_option
def ledger_rebuild(config_path: Path | None) -> None:
    """Rebuild the ledger from the CRM after losing it: no LLM call, nothing rescored whose inputs are unchanged."""
    from .app import build_connector
    from .rebuild import rebuild

    config = _load(config_path, "INFO")
    hold_state_dir(config, "ledger rebuild")
    connector = build_connector(config)
    store = _ledger(config)
    try:
        counts = rebuild(config, connector, store)
    finally:
        connector.close()
        store.close()
    out.print(
        f"ledger rebuilt from the CRM: {counts['written']} scored by crmsync with unchanged inputs (kept), "
        f"{counts['rescore']} with changed inputs (rescored next cycle), {counts['adopted']} scored without an input "
        f"hash (adopted, left alone), {counts['human']} decided by a reviewer, {counts['unscored']} unscored, "
        f"{counts['kept']} already in the ledger. No LLM call was made.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if not config.fields.outputs.input_hash:
        out.print(
            "note: [fields.outputs] input_hash is not mapped, so crmsync cannot tell its own scores from others'; "
            "map it (see config.example.toml) so a future rebuild can.",
            style="yellow",
            markup=False,
            highlight=False,
        )
