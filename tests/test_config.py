"""Config loading: every error names the file, the key and what is expected; secrets never leak."""

from __future__ import annotations

import pytest

from crmsync.app import build_scorer
from crmsync.config import Config, load_config
from crmsync.errors import ConfigError
from crmsync.providers.llamacpp_provider import LlamaCppOptions
from crmsync.providers.openai_provider import OpenAIOptions

GOOD = """
[providers.fast]
type = "openai"
model = "gpt-x"
api_key_env = "CRMSYNC_T_OPENAI"
timeout_s = 5

[providers.careful]
type = "anthropic"
model = "claude-x"
api_key_env = "CRMSYNC_T_ANTHROPIC"

[[chain]]
provider = "fast"
escalate_below = 0.7

[[chain]]
provider = "careful"

[prices.gpt-x]
input = 0.4
cached_input = 0.1
output = 1.6
as_of = 2026-11-01
"""


def write(tmp_path, text, name="crmsync.toml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def error_of(tmp_path, text):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert str(p) in msg  # always names the file
    return msg


def test_default_config_is_local_and_keyless():
    cfg = load_config(None)
    assert isinstance(cfg.providers["local"], LlamaCppOptions)
    assert [s.provider for s in cfg.chain] == ["local"]


def test_good_file_loads(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert isinstance(cfg.providers["fast"], OpenAIOptions) and cfg.providers["fast"].timeout_s == 5
    assert cfg.chain[0].escalate_below == 0.7 and cfg.prices["gpt-x"].cached_input == 0.1
    assert cfg.base_dir == tmp_path and cfg.source == str(tmp_path / "crmsync.toml")
    assert cfg.path("state") == tmp_path / "state"


def test_make_config_fixture_round_trips(make_config, tmp_path):
    cfg = make_config(
        providers={"a": {"type": "openai", "model": "m.1", "base_url": "http://x/v1"}},
        steps=[("a", 0.5)],
        prices={"m.1": {"input": 1, "output": 2, "as_of": "2026-11-01"}},
        review={"max_score_gap": 7},
    )
    assert cfg.chain[0].escalate_below == 0.5 and cfg.review.max_score_gap == 7 and "m.1" in cfg.prices


def test_unknown_key_named_with_line_and_suggestion(tmp_path):
    msg = error_of(tmp_path, "[review]\nconfidence_below = 0.5\nmax_score_gapp = 10\n")
    assert "`review.max_score_gapp` (line 3): unknown key; did you mean `max_score_gap`?" in msg


def test_unknown_key_in_provider_named(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("timeout_s = 5", "timeout = 5"))
    assert "`providers.fast.timeout`" in msg and "unknown key" in msg and "(line 6)" in msg


def test_misspelt_provider_option_exact_message(tmp_path):
    """The provider's own Options know its keys: a misspelt one is named with its line and the key meant."""
    msg = error_of(tmp_path, GOOD.replace('api_key_env = "CRMSYNC_T_ANTHROPIC"', 'api_keyenv = "CRMSYNC_T_ANTHROPIC"'))
    assert msg == (
        f"{tmp_path / 'crmsync.toml'}: 1 problem(s):\n"
        "  - `providers.careful.api_keyenv` (line 11): unknown key; did you mean `api_key_env`? "
        "Remove it or fix its spelling."
    )


def test_wrong_type_named_with_expectation(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("timeout_s = 5", 'timeout_s = "soon"'))
    assert "`providers.fast.timeout_s` (line 6)" in msg and "valid number" in msg and "'soon'" in msg


def test_provider_named_like_its_type_keeps_its_name_in_errors(tmp_path):
    text = '[providers.openai]\ntype = "openai"\nmodel = "m"\ntimeout_s = -1\n\n[[chain]]\nprovider = "openai"\n'
    msg = error_of(tmp_path, text)
    assert "`providers.openai.timeout_s`" in msg and "greater than 0" in msg


def test_missing_value_named(tmp_path):
    msg = error_of(tmp_path, GOOD.replace('model = "gpt-x"\n', ""))
    assert "`providers.fast.model`: missing required key" in msg


def test_out_of_range_named(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("escalate_below = 0.7", "escalate_below = 70"))
    assert "`chain[0].escalate_below`" in msg and "less than or equal to 1" in msg


def test_unknown_provider_type(tmp_path):
    msg = error_of(tmp_path, GOOD.replace('type = "anthropic"', 'type = "gemini"'))
    assert "`providers.careful.type` (line 9): 'gemini': no such provider. Installed: anthropic," in msg


def test_chain_naming_unknown_provider(tmp_path):
    msg = error_of(tmp_path, GOOD.replace('provider = "careful"', 'provider = "carefull"'))
    assert "'carefull'" in msg and "careful, fast" in msg


def test_missing_price_date(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("as_of = 2026-11-01\n", ""))
    assert "`prices.gpt-x.as_of`: missing required key" in msg


def test_bad_toml_and_missing_file(tmp_path):
    msg = error_of(tmp_path, "[review\nconfidence_below = 0.5\n")
    assert "not valid TOML" in msg and "line 1" in msg
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_inputs_outputs_overlap_rejected(tmp_path):
    msg = error_of(tmp_path, '[fields.inputs]\nscore = "ai_score"\n')
    assert "ai_score" in msg and "both inputs and outputs" in msg


def test_missing_api_key_env_vars_named_at_startup(tmp_path, monkeypatch):
    monkeypatch.delenv("CRMSYNC_T_OPENAI", raising=False)
    monkeypatch.delenv("CRMSYNC_T_ANTHROPIC", raising=False)
    cfg = load_config(write(tmp_path, GOOD))
    with pytest.raises(ConfigError) as info:
        build_scorer(cfg)
    msg = str(info.value)
    assert "CRMSYNC_T_OPENAI" in msg and "CRMSYNC_T_ANTHROPIC" in msg  # both at once
    assert "'fast'" in msg and "'careful'" in msg


def test_build_scorer_with_keys_set(tmp_path, monkeypatch):
    monkeypatch.setenv("CRMSYNC_T_OPENAI", "sk-a")
    monkeypatch.setenv("CRMSYNC_T_ANTHROPIC", "sk-b")
    cfg = load_config(write(tmp_path, GOOD))
    scorer = build_scorer(cfg)
    assert list(scorer.chain.providers) == ["fast", "careful"]
    assert scorer.rubric.version  # the bundled rubric


def test_secret_pasted_into_config_never_echoed(tmp_path):
    secret = "sk-proj-VERYSECRET0123456789abcdef"
    msg = error_of(tmp_path, GOOD.replace('api_key_env = "CRMSYNC_T_OPENAI"', f'api_key_env = "{secret}"'))
    assert "VERYSECRET" not in msg
    assert "`providers.fast.api_key_env`" in msg and "NAME of an environment variable" in msg
    msg = error_of(tmp_path, GOOD.replace("timeout_s = 5", f'api_key = "{secret}"'))
    assert "VERYSECRET" not in msg and "`providers.fast.api_key`" in msg


def test_config_model_rejects_base_dir_from_file(tmp_path):
    cfg = load_config(write(tmp_path, 'base_dir = "/etc"\n' + GOOD))
    assert cfg.base_dir == tmp_path


def test_config_defaults_documented_values():
    cfg = Config()
    assert cfg.scoring.repair_attempts == 1 and cfg.cooldown.max_s == 600 and cfg.review.max_score_gap == 15
