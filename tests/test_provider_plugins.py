"""Providers are plugins: a third-party provider (tests/plugins/toy_provider) registered through a real
``crmsync.providers`` entry point runs through the real CLI with no edit under crmsync/, is checked by
`crmsync check`, passes ProviderContract, and is closed by every command that opened it. Plus the exact
messages for an unknown type, a misspelt option and an entry point that is not a Provider."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crmsync.config import load_config
from crmsync.errors import ConfigError
from crmsync.providers.base import Provider
from crmsync.providers.options import ProviderContext
from crmsync.registry import PROVIDERS, available
from crmsync.testing import ProviderContract
from tests.daemon_helpers import env

TOY_SOURCE = Path(__file__).parent / "plugins" / "toy_provider"
ENTRY_POINTS = """[crmsync.providers]
toy = toy_provider:ToyProvider
not-a-provider = toy_provider:ToyOptions
gone = toy_provider_gone:GoneProvider
"""


def install_toy(site: Path) -> Path:
    """The toy package and its dist-info (METADATA + entry_points.txt) in ``site``: installed as pip would,
    found by importlib.metadata once ``site`` is on the path. Nothing is written into the venv."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copytree(TOY_SOURCE, site / "toy_provider", ignore=shutil.ignore_patterns("__pycache__"))
    info = site / "toy_provider-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-provider\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    return site


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_toy(tmp_path_factory.mktemp("toy") / "site")


@pytest.fixture
def toy_on_path(toy_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(toy_site))
    yield toy_site
    for name in [m for m in sys.modules if m == "toy_provider" or m.startswith("toy_provider.")]:
        del sys.modules[name]


def toy_config(tmp: Path, provider: str = "", **sections: str) -> Path:
    (tmp / "leads.csv").write_text("id,company,monthly_orders,description\nA,Acme,9000,Big\nB,Beta,500,Small\nC,Gamma,,None given\n")
    cfg = tmp / "crmsync.toml"
    cfg.write_text(
        f"""
[crm]
type = "sqlite"
[crm.options]
seed_csv = "leads.csv"

[fields]
inputs = {{ company = "company", monthly_orders = "monthly_orders", description = "description" }}

[providers.fast]
type = "toy"
orders_for_top = 10000
record_file = "record.txt"
{provider}

[[chain]]
provider = "fast"

[daemon]
state_dir = "state"
changed_lag_s = 0
{sections.get("extra", "")}
""",
        encoding="utf-8",
    )
    return cfg


def cli(cfg: Path, site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    e = env("unused")
    e["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-m", "crmsync", *args, "--config", str(cfg)], capture_output=True, text=True, env=e, timeout=120, cwd=cfg.parent
    )


def flat(text: str) -> str:
    return " ".join(text.split())


# -- through the real CLI, in a subprocess ---------------------------------------------------------------
def test_toy_provider_scores_a_file_through_the_cli(tmp_path: Path, toy_site: Path) -> None:
    cfg = toy_config(tmp_path)
    out = tmp_path / "out.csv"
    r = cli(cfg, toy_site, "score", "--input", str(tmp_path / "leads.csv"), "--output", str(out))
    assert r.returncode == 0, r.stderr
    rows = {row["id"]: row for row in csv.DictReader(out.open())}
    assert {k: rows[k]["score"] for k in "ABC"} == {"A": "90", "B": "5", "C": "0"}  # orders / 10,000 × 100
    assert rows["A"]["provider"] == "fast" and rows["A"]["model"] == "toy-1"
    assert rows["C"]["needs_review"] == "True"  # no orders: confidence 0.4, under the review threshold
    assert (tmp_path / "record.txt").read_text() == "open fast\nclose fast\n"


def test_check_runs_the_toy_providers_own_check(tmp_path: Path, toy_site: Path) -> None:
    cfg = toy_config(tmp_path)
    r = cli(cfg, toy_site, "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all checks passed" in r.stdout and "prices" not in r.stdout  # not paid: no price warning
    assert (tmp_path / "record.txt").read_text() == "open fast\nclose fast\n"

    cfg = toy_config(tmp_path, 'model = "toy-9"')
    r = cli(cfg, toy_site, "check")
    assert r.returncode == 1
    assert "error providers.fast: toy has no model 'toy-9'; it knows toy-1, toy-2" in flat(r.stdout)


def test_run_once_closes_the_providers_it_opened(tmp_path: Path, toy_site: Path) -> None:
    cfg = toy_config(tmp_path)
    r = cli(cfg, toy_site, "run", "--once")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "scored 3" in flat(r.stdout) and "written 3" in flat(r.stdout)
    assert (tmp_path / "record.txt").read_text() == "open fast\nclose fast\n"


def test_a_failing_command_still_closes_its_providers(tmp_path: Path, toy_site: Path) -> None:
    """`run` opens the providers, then the connector fails to build: the providers are closed all the same."""
    cfg = toy_config(tmp_path)
    cfg.write_text(cfg.read_text().replace('seed_csv = "leads.csv"', 'seed_csv = "leads.csv"\nno_such_option = 1'))
    r = cli(cfg, toy_site, "run", "--once")
    assert r.returncode == 2 and "`crm.options.no_such_option`" in flat(r.stderr)
    assert (tmp_path / "record.txt").read_text() == "open fast\nclose fast\n"


def test_eval_closes_the_providers_it_opened(tmp_path: Path, toy_site: Path) -> None:
    cfg = toy_config(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,company,monthly_orders,outcome\nA,Acme,9000,qualified\nB,Beta,50,unqualified\n")
    r = cli(cfg, toy_site, "eval", "--labels", str(labels))
    assert "2 labeled leads" in flat(r.stdout), r.stdout + r.stderr
    assert (tmp_path / "record.txt").read_text() == "open fast\nclose fast\n"


# -- the config's words ----------------------------------------------------------------------------------
def test_unknown_provider_type_lists_what_is_installed(tmp_path: Path, toy_on_path: Path) -> None:
    cfg = toy_config(tmp_path)
    cfg.write_text(cfg.read_text().replace('type = "toy"', 'type = "toyy"'))
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    installed = available(PROVIDERS)
    assert {"anthropic", "llamacpp", "openai", "toy"} <= set(installed)  # built-ins and the plugin, one way
    assert str(info.value) == (
        f"{cfg}: 1 problem(s):\n  - `providers.fast.type` (line 11): 'toyy': no such provider. Installed: {', '.join(installed)}."
    )


def test_misspelt_plugin_option_is_matched_against_the_plugins_own_keys(tmp_path: Path, toy_on_path: Path) -> None:
    cfg = toy_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("orders_for_top =", "orders_for_tops ="))
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert str(info.value) == (
        f"{cfg}: 1 problem(s):\n"
        "  - `providers.fast.orders_for_tops` (line 12): unknown key; did you mean `orders_for_top`? Remove it or fix its spelling."
    )


def test_entry_point_that_is_not_a_provider_is_refused(tmp_path: Path, toy_on_path: Path) -> None:
    cfg = toy_config(tmp_path)
    cfg.write_text(cfg.read_text().replace('type = "toy"', 'type = "not-a-provider"'))
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert ("`providers.fast.type` (line 11): 'not-a-provider': entry point toy_provider:ToyOptions is not a crmsync Provider.") in str(
        info.value
    )
    cfg.write_text(cfg.read_text().replace('type = "not-a-provider"', 'type = "gone"'))
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert (
        "'gone': the provider is registered but cannot be imported (No module named 'toy_provider_gone'). "
        "Reinstall the package that provides it."
    ) in str(info.value)


def test_toy_options_load_as_the_plugins_own_class(tmp_path: Path, toy_on_path: Path) -> None:
    options = load_config(toy_config(tmp_path)).providers["fast"]
    assert type(options).__name__ == "ToyOptions" and options.type == "toy"
    assert options.orders_for_top == 10000 and options.model == "toy-1"  # type: ignore[attr-defined]


# -- the contract ------------------------------------------------------------------------------------------
class TestToyProviderContract(ProviderContract):
    @pytest.fixture
    def provider(self, tmp_path: Path, toy_on_path: Path) -> Provider:
        from crmsync.config_providers import provider_class

        cls = provider_class("toy", "type")
        return cls("toy", cls.Options.model_validate({"type": "toy"}), ProviderContext(base_dir=tmp_path))

    @pytest.fixture
    def broken_provider(self, tmp_path: Path, toy_on_path: Path) -> Provider:
        from crmsync.config_providers import provider_class

        cls = provider_class("toy", "type")
        return cls("toy", cls.Options.model_validate({"type": "toy", "model": "toy-9"}), ProviderContext(base_dir=tmp_path))
