"""What every command shares: the consoles, loading the config with logging set up, opening the ledger."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from .config import Config, load_config
from .logs import secret_env_vars, setup_logging
from .state import Ledger

out = Console(width=None if sys.stdout.isatty() else 150)  # wide enough to read in a log or a pipe
err = Console(stderr=True)
config_option = click.option("--config", "-c", "config_path", type=click.Path(path_type=Path), envvar="CRMSYNC_CONFIG",
                             help="The TOML config file. Default: the embedded default (local CRM, local model).")


def load_for_command(config_path: Path | None, log_level: str = "INFO") -> Config:
    config = load_config(config_path)
    setup_logging(log_level, secret_env_vars(config))
    return config


def ledger_path(config: Config) -> Path:
    return config.state_dir / "ledger.sqlite"


def open_ledger(config: Config) -> Ledger:
    return Ledger(ledger_path(config), config.crm.type)
