"""`crmsync plugins` lists what is installed through the entry points, third-party packages included, and says
why a registered plugin cannot load (the same reason a config naming it would get)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.test_provider_plugins import install_toy


def plugins(site: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "crmsync", "plugins"], capture_output=True, text=True, env=env, timeout=60)


def rows(stdout: str) -> dict[str, str]:
    """type → the whole table row."""
    found = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 5 and cells[0] in ("connector", "provider"):
            found[cells[1]] = line
    return found


def test_built_ins_are_listed_as_any_plugin_is() -> None:
    r = plugins()
    assert r.returncode == 0, r.stderr
    table = rows(r.stdout)
    for name in ("sqlite", "salesforce", "hubspot", "openai", "anthropic"):
        assert name in table and table[name].rstrip(" │").endswith("ok"), table.get(name)
    assert "crmsync_salesforce:SalesforceConnector" in table["salesforce"]
    assert "cannot be loaded" not in r.stdout


def test_a_third_party_provider_and_a_broken_one_are_shown_with_the_reason(tmp_path: Path) -> None:
    r = plugins(install_toy(tmp_path / "site"))
    assert r.returncode == 0, r.stderr
    table = rows(r.stdout)
    assert "toy_provider:ToyProvider" in table["toy"] and "toy-provider 0.1" in table["toy"]
    assert table["toy"].rstrip(" │").endswith("ok")
    assert "entry point toy_provider:ToyOptions is not a" in table["not-a-provider"]
    assert "the provider is registered but cannot be" in table["gone"]
    flat = " ".join(r.stdout.replace("│", " ").split())  # a long reason wraps inside its cell
    assert "is not a crmsync Provider." in flat and "No module named 'toy_provider_gone'" in flat
    assert "2 plugin(s) cannot be loaded" in r.stdout
