"""What every command shares: the consoles, loading the config with logging set up, opening the ledger."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from .config import Config, load_config
from .logs import secret_env_vars, setup_logging
from .state import Ledger

out = Console(width=None if sys.stdout.isatty() else 150)  # wide enough to read in a log or a pipe
err = Console(stderr=True)
config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="CRMSYNC_CONFIG",
    help="The TOML config file. Default: the embedded default (local CRM, local model).",
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level_option(default: str = "INFO") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--log-level``, one definition for every command: a typo is a usage error listing the choices, not a
    traceback from ``logging``; any case is accepted and passed on upper-case."""
    return click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default=default,
        show_default=True,
        help="How much crmsync logs on stderr (any case): DEBUG shows every provider call and decision.",
    )


def load_for_command(config_path: Path | None, log_level: str = "INFO") -> Config:
    config = load_config(config_path)
    setup_logging(log_level, secret_env_vars(config))
    return config


def ledger_path(config: Config) -> Path:
    return config.state_dir / "ledger.sqlite"


def open_ledger(config: Config) -> Ledger:
    return Ledger(ledger_path(config), config.crm.type)


def hold_state_dir(config: Config, command: str) -> None:
    """One crmsync per state dir (see crmsync.instance), held until this command ends or the process dies."""
    from .instance import hold_state_dir as take

    lock = take(config.state_dir, command)
    click.get_current_context().call_on_close(lock.release)  # in-process callers (tests, CliRunner) get it back
