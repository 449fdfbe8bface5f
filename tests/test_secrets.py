"""Secret hygiene: a pasted key where a variable NAME belongs is refused without being echoed (core providers and
both CRM connectors); a key with a non-ASCII character is one config error naming the variable; and no secret
value reaches any output, log line, ledger row, CRM field or results file, even when a provider echoes it."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from crmsync.app import build_connector
from crmsync.config import load_config, require_env
from crmsync.errors import ConfigError
from crmsync.logs import setup_logging
from crmsync.registry import PROVIDERS, available
from crmsync.support import Secrets, redact, register_secret
from tests.daemon_helpers import KEY_ENV, crm_rows, crmsync, lead, ledger_rows, write_setup
from tests.emulators import OpenAIEmulator, error, refusal

AZURE_STYLE = "c4f1a9e2b7d34f0a9e8b1c2d3e4f5a6b"
HUBSPOT_PAT = "pat-na1-5c7e2a90-1b3d-4f6a-8c9e-0d2b4f6a8c1e"
NAME_ERROR = (
    "must be the NAME of an environment variable (upper-case letters, digits and _ such as OPENAI_API_KEY), "
    "not the key itself; the value you gave was not shown."
)


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich may wrap long lines


def _config_error(tmp_path: Path, toml: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        config = load_config(path)
        build_connector(config)
    return str(exc.value)


# -- one environment-variable-name type ---------------------------------------------------------------
@pytest.mark.parametrize("pasted", [AZURE_STYLE, HUBSPOT_PAT, "openai_api_key", "9LIVES", "sk-proj-abc123"])
def test_a_pasted_provider_key_is_refused_and_never_shown(tmp_path: Path, pasted: str) -> None:
    msg = _config_error(
        tmp_path, f'[providers.fast]\ntype = "openai"\nmodel = "m"\napi_key_env = "{pasted}"\n[[chain]]\nprovider = "fast"\n'
    )
    assert msg == f"{tmp_path / 'c.toml'}: 1 problem(s):\n  - `providers.fast.api_key_env` (line 4): {NAME_ERROR}"
    assert pasted not in msg


def test_anthropic_and_a_provider_named_like_a_type(tmp_path: Path) -> None:
    msg = _config_error(
        tmp_path, f'[providers.openai]\ntype = "anthropic"\nmodel = "m"\napi_key_env = "{AZURE_STYLE}"\n[[chain]]\nprovider = "openai"\n'
    )
    assert f"`providers.openai.api_key_env` (line 4): {NAME_ERROR}" in msg and AZURE_STYLE not in msg


def test_hubspot_access_token_env_is_checked_too(tmp_path: Path) -> None:
    msg = _config_error(tmp_path, f'[crm]\ntype = "hubspot"\n[crm.options]\naccess_token_env = "{HUBSPOT_PAT}"\n')
    assert f"  - `crm.options.access_token_env`: {NAME_ERROR}" in msg and HUBSPOT_PAT not in msg


@pytest.mark.parametrize("key", ["password_env", "security_token_env"])
def test_salesforce_auth_env_names_use_the_same_type(tmp_path: Path, key: str) -> None:
    msg = _config_error(
        tmp_path,
        f'[crm]\ntype = "salesforce"\n[crm.options]\nauth = {{ mode = "password", username = "u@x.com", {key} = "Hunter2-S3cret!" }}\n',
    )
    # the auth mode ("password") is pydantic's union tag, not a key the admin wrote: it is not shown
    assert f"  - `crm.options.auth.{key}`: {NAME_ERROR}" in msg and "Hunter2" not in msg


def test_conventional_names_pass(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[providers.fast]\ntype = "openai"\nmodel = "m"\napi_key_env = "_AZURE_OPENAI_KEY_2"\n[[chain]]\nprovider = "fast"\n')
    assert load_config(path).providers["fast"].api_key_env == "_AZURE_OPENAI_KEY_2"  # type: ignore[attr-defined]  # openai's own option


def test_pasted_key_from_run_and_check_is_never_printed(tmp_path: Path) -> None:
    cfg = write_setup(tmp_path, "http://127.0.0.1:9/v1", [lead(1)])
    cfg.write_text(cfg.read_text().replace(f'api_key_env = "{KEY_ENV}"', f'api_key_env = "{AZURE_STYLE}"'))
    line = next(i for i, text in enumerate(cfg.read_text().splitlines(), 1) if text.startswith("api_key_env"))
    for command in (["run", "--once"], ["check"]):
        r = crmsync(cfg, *command, key="unused")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert f"`providers.fast.api_key_env` (line {line}): {NAME_ERROR}" in _flat(r.stderr)
        assert AZURE_STYLE not in r.stdout + r.stderr


# -- non-ASCII keys -----------------------------------------------------------------------------------
def test_non_ascii_key_is_one_config_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-abc\u2019def")  # a curly quote picked up while pasting
    with pytest.raises(ConfigError) as exc:
        require_env("OPENAI_API_KEY", "provider 'fast'")
    assert str(exc.value) == (
        "provider 'fast': environment variable OPENAI_API_KEY contains a non-ASCII character "
        "(U+2019 at position 12 of 15); paste the key again"
    )


def test_non_ascii_key_stops_run_at_startup_and_check_names_it(tmp_path: Path) -> None:
    key = "sk-proj-abc\u00a0def"  # a non-breaking space
    with OpenAIEmulator() as emu:
        cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 4)])
        r = crmsync(cfg, "run", "--once", key=key)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and "UnicodeEncodeError" not in r.stderr
        assert (
            f"provider 'fast': environment variable {KEY_ENV} contains a non-ASCII character (U+00A0 at position "
            "12 of 15); paste the key again"
        ) in _flat(r.stderr)
        assert _flat(r.stderr).count("non-ASCII") == 1, "one error at startup, not one per lead"
        assert emu.request_count() == 0 and ledger_rows(tmp_path) == {}
        c = crmsync(cfg, "check", key=key)
        assert c.returncode == 1
        assert f"error providers.fast.api_key_env: provider 'fast': environment variable {KEY_ENV} contains a non-ASCII" in _flat(c.stdout)
        assert key not in r.stdout + r.stderr + c.stdout + c.stderr


# -- one redactor ---------------------------------------------------------------------------------------
def test_redactor_masks_longest_first_and_leaves_short_values() -> None:
    s = Secrets()
    s.add("abc")  # too short to mask without garbling ordinary text
    s.add("sk-live-123456")
    s.add("sk-live-123456-extended")
    s.add("  padded-secret-9 \n")  # also masked without its surrounding whitespace
    assert s.redact("k=sk-live-123456-extended; j=sk-live-123456; abc; padded-secret-9") == "k=***; j=***; abc; ***"


def test_log_lines_and_tracebacks_are_masked(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_LOG_SECRET", "tok-LOGGED-998877")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("INFO", ["CRMSYNC_TEST_LOG_SECRET"])
    try:
        try:
            raise RuntimeError("server said tok-LOGGED-998877 is wrong")
        except RuntimeError:
            logging.getLogger("crmsync.test").exception("call failed with %s", "tok-LOGGED-998877")
    finally:
        root.handlers[:], root.level = saved
    err = capsys.readouterr().err
    assert "call failed with ***" in err and "RuntimeError: server said *** is wrong" in err
    assert "tok-LOGGED-998877" not in err


def test_a_secret_read_once_is_masked_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_ANY_SECRET", "zz-REGISTERED-4242")
    require_env("CRMSYNC_TEST_ANY_SECRET", "test")
    assert redact("echo zz-REGISTERED-4242!") == "echo ***!"
    register_secret("yy-DIRECT-1313")
    assert redact("yy-DIRECT-1313") == "***"


# -- the whole path: a provider that echoes the key ------------------------------------------------------
LEAK = "sk-proj-LEAKCHECK-7f3a9c1e5b2d"


def _every_stored_byte(tmp_path: Path) -> dict[str, bytes]:
    """Every file crmsync wrote (the ledger and its WAL, the local CRM, results), plus SQL dumps of the databases."""
    out = {str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for name in ("ledger.sqlite", "local-crm.sqlite"):
        db = sqlite3.connect(tmp_path / "state" / name)
        out[f"dump of {name}"] = "\n".join(db.iterdump()).encode()
        db.close()
    return out


def test_a_key_echoed_by_the_provider_is_in_no_output_log_ledger_crm_or_file(tmp_path: Path) -> None:
    echo = {"error": {"message": f"upstream rejected the key {LEAK}", "type": "server_error", "param": None, "code": None}}
    with OpenAIEmulator(api_key=LEAK) as emu:
        # no cooldown: each lead meets its own scripted answer
        cfg = write_setup(tmp_path, emu.base_url, [lead(1), lead(2), lead(3)], extra="[cooldown]\nbase_s = 0.0")
        # E001: a 500 echoing the key (failed, retried next cycle); E002: refusals echoing it (no valid answer:
        # flagged and written to the CRM); E003: a normal answer.
        emu.script("emu-fast", error(500, body=echo), refusal(f"I cannot use {LEAK}"), refusal(f"still {LEAK}"))
        run = crmsync(cfg, "run", "--once", "--log-level", "DEBUG", key=LEAK)
        status = crmsync(cfg, "status", key=LEAK)
        emu.script("emu-fast", error(500, body=echo), error(500, body=echo), error(500, body=echo))
        score = crmsync(cfg, "score", "--input", str(tmp_path / "leads.csv"), "--output", str(tmp_path / "scored.jsonl"), key=LEAK)
        assert emu.request_count() >= 6, "the emulator really was asked (and echoed the key)"
    assert "Traceback" not in run.stderr + status.stderr + score.stderr
    texts = {
        "run stdout": run.stdout,
        "run stderr": run.stderr,
        "status": status.stdout + status.stderr,
        "score": score.stdout + score.stderr,
    }
    files = _every_stored_byte(tmp_path)
    assert (tmp_path / "scored.jsonl").is_file() and "dump of ledger.sqlite" in files
    leaks = [where for where, text in texts.items() if LEAK in text] + [where for where, data in files.items() if LEAK.encode() in data]
    assert leaks == [], f"the key leaked into: {leaks}"
    # The echoes were there to leak: they are stored masked.
    rows = ledger_rows(tmp_path)
    assert "upstream rejected the key ***" in (rows["E001"]["last_error"] or "")
    assert "upstream rejected the key ***" in rows["E001"]["result_json"]
    assert "refusal: still ***" in rows["E002"]["result_json"]
    assert crm_rows(tmp_path)["E002"]["ai_needs_review"] == 1  # written to the CRM (grepped above)
    assert "upstream rejected the key ***" in run.stderr  # the DEBUG log line, masked


def test_an_env_key_of_the_wrong_type_is_not_echoed_either(tmp_path: Path) -> None:
    """format_validation_error never shows the input of a *_env key, whatever the error."""
    path = tmp_path / "c.toml"
    path.write_text('[providers.fast]\ntype = "openai"\nmodel = "m"\napi_key_env = 12345678\n[[chain]]\nprovider = "fast"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "`providers.fast.api_key_env` (line 4): Input should be a valid string." in str(exc.value)
    assert "12345678" not in str(exc.value)


@pytest.mark.parametrize(
    "table, shown",
    [
        ('type = "gemini"\nmodel = "m"', "`providers.fast.type` (line 2): 'gemini': no such provider. Installed: {installed}."),
        ('model = "m"', "`providers.fast.type`: `type` is missing: name the provider (installed: {installed})."),
    ],
)
def test_provider_type_messages(tmp_path: Path, table: str, shown: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[providers.fast]\n{table}\n[[chain]]\nprovider = "fast"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    installed = ", ".join(available(PROVIDERS))  # the crmsync.providers entry points: built-ins and plugins alike
    assert {"anthropic", "llamacpp", "openai"} <= set(installed.split(", "))
    assert str(exc.value) == f"{path}: 1 problem(s):\n  - " + shown.format(installed=installed)
