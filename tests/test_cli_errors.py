"""What a person sees when the config, the environment or the rubric is wrong: the exact message, and
that nothing was scored or written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon_helpers import KEY_ENV, crm_rows, crmsync, lead, ledger_rows, write_setup
from tests.emulators import OpenAIEmulator


@pytest.fixture
def emu():
    with OpenAIEmulator() as e:
        yield e


def _run_bad(cfg: Path, key: str = "sk-test-emulator") -> str:
    r = crmsync(cfg, "run", "--once", key=key)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return " ".join(r.stderr.split())  # rich may wrap long lines


def test_unknown_key_names_file_line_and_suggestion(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(1)], extra="fetch_limt = 10")
    msg = _run_bad(cfg)
    assert f"{cfg}: 1 problem(s)" in msg
    assert "`daemon.fetch_limt`" in msg and "unknown key; did you mean `fetch_limit`?" in msg
    line = next(i for i, text in enumerate(cfg.read_text().splitlines(), 1) if text.startswith("fetch_limt"))
    assert f"(line {line})" in msg
    assert emu.request_count() == 0


def test_wrong_type_names_key_and_expected_type(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(1)])
    cfg.write_text(cfg.read_text().replace("concurrency = 1", 'concurrency = "four"'))
    msg = _run_bad(cfg)
    assert "`scoring.concurrency`" in msg and "Input should be a valid integer" in msg and "got 'four'" in msg


def test_missing_key_variable_is_named_and_secret_free(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(1)])
    msg = _run_bad(cfg, key="")
    assert f"provider 'fast': environment variable {KEY_ENV} is not set" in msg
    assert "never in the config file" in msg
    assert not (tmp_path / "state" / "ledger.sqlite").exists() or ledger_rows(tmp_path) == {}


def test_unknown_connector_lists_installed_ones(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(1)])
    cfg.write_text(cfg.read_text().replace('type = "sqlite"', 'type = "pipedrive"').replace('seed_csv = "leads.csv"', ""))
    msg = _run_bad(cfg)
    assert "[crm] type = 'pipedrive': no such connector. Installed:" in msg
    assert "sqlite" in msg


def test_unreadable_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "config.toml"
    folder.mkdir()  # a folder where a file should be: unreadable even for root
    msg = _run_bad(folder)
    assert f"{folder}: cannot read the config file (Is a directory)" in msg


def test_missing_config_file(tmp_path: Path) -> None:
    msg = _run_bad(tmp_path / "nope.toml")
    assert "nope.toml: config file not found. Start from config.example.toml." in msg


def test_broken_toml_points_at_the_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[daemon]\ninterval_s = = 5\n")
    msg = _run_bad(cfg)
    assert "not valid TOML" in msg and "line 2" in msg


def test_bad_connector_option_is_named_under_crm_options(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(1)])
    cfg.write_text(cfg.read_text().replace('seed_csv = "leads.csv"', 'seed_csv = "leads.csv"\ntabel = "x"'))
    msg = _run_bad(cfg)
    assert "`crm.options.tabel`" in msg and "did you mean `table`?" in msg


def test_broken_rubric_at_start_names_file_and_line(tmp_path: Path, emu: OpenAIEmulator) -> None:
    rubric = tmp_path / "rubric.md"
    rubric.write_text('+++\nname = "x"\ncolour = "blue"\n[tiers]\nA = 50\nB = 0\n+++\n' + "Score leads well. " * 20)
    cfg = write_setup(tmp_path, emu.base_url, [lead(1)], rubric=rubric)
    msg = _run_bad(cfg)
    assert f"{rubric}:3: unknown setting `colour`" in msg
    assert emu.request_count() == 0
    assert not (tmp_path / "state" / "local-crm.sqlite").exists() or all(r["ai_score"] is None for r in crm_rows(tmp_path).values())


def test_chain_names_unknown_provider(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(1)], chain='[[chain]]\nprovider = "fats"')
    msg = _run_bad(cfg)
    assert "chain[0].provider = 'fats' is not a provider under [providers] (known: fast)" in msg


def test_api_key_never_appears_in_output(tmp_path: Path, emu: OpenAIEmulator) -> None:
    secret = "sk-live-SECRET-0123456789"
    cfg = write_setup(tmp_path, emu.base_url, [lead(1)])
    r = crmsync(cfg, "run", "--once", "--log-level", "DEBUG", key=secret)  # the emulator rejects this key: 401
    assert secret not in r.stdout + r.stderr
    assert "401" in r.stderr
    assert r.returncode == 1  # the lead failed (retried next cycle), the process says so
