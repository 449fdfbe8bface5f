"""crmsync.support, the one home of what connectors and providers share: the retry policy (driven by the one fake
clock, nothing sleeps), Retry-After parsing, the environment-variable-name type, masking, and the label rule."""

from __future__ import annotations

import ast
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

import crmsync_hubspot
from crmsync.app import build_connector
from crmsync.config import load_config
from crmsync.errors import ConfigError, ProviderUnavailable, RetriableConnectorError
from crmsync.support import (
    MIN_SECRET_LEN,
    EnvVarName,
    GiveUp,
    LabelRecord,
    RetryPolicy,
    Secrets,
    harvest_label,
    one_of,
    parse_retry_after,
    register_secret,
)
from tests.fakes import FakeClock

ROOT = Path(__file__).resolve().parent.parent


class Flaky:
    """Fails with each scripted error in turn, then answers "ok"; counts the calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def down(retry_after: float | None = None, status: int = 503) -> ProviderUnavailable:
    return ProviderUnavailable(f"HTTP {status}", retry_after=retry_after, status=status)


def transient(exc: BaseException) -> bool:
    return isinstance(exc, ProviderUnavailable) and exc.status != 429


def limited(exc: BaseException) -> bool:
    return isinstance(exc, ProviderUnavailable) and exc.status == 429


# -- the retry policy -------------------------------------------------------------------------------------
def test_transient_failures_are_retried_with_backoff_on_the_injected_clock() -> None:
    clock = FakeClock()
    call = Flaky(down(), down())
    assert RetryPolicy(attempts=3, transient=transient, clock=clock).call(call) == "ok"
    assert call.calls == 3
    assert len(clock.sleeps) == 2
    assert 0.375 <= clock.sleeps[0] <= 0.5 and 0.75 <= clock.sleeps[1] <= 1.0  # 0.5 s, 1 s, minus up to 25 % jitter
    assert clock.now == pytest.approx(1000.0 + sum(clock.sleeps))


def test_retry_after_is_honoured_exactly() -> None:
    clock = FakeClock()
    call = Flaky(down(retry_after=3.0), down(retry_after=0.0))
    assert RetryPolicy(attempts=3, transient=transient, max_retry_after_s=5, clock=clock).call(call) == "ok"
    assert clock.sleeps == [3.0, 0.0]


def test_stops_after_the_bound_and_raises_the_last_failure() -> None:
    clock = FakeClock()
    errors = [down(), down(), down(status=502)]
    call = Flaky(*errors, down())
    with pytest.raises(ProviderUnavailable) as info:
        RetryPolicy(attempts=3, transient=transient, clock=clock).call(call)
    assert info.value is errors[2] and call.calls == 3 and len(clock.sleeps) == 2


def test_a_retry_after_over_the_cap_gives_up_at_once_or_is_clamped() -> None:
    clock = FakeClock()
    call = Flaky(down(retry_after=60.0))
    with pytest.raises(ProviderUnavailable, match="HTTP 503"):
        RetryPolicy(attempts=5, transient=transient, max_retry_after_s=30, clock=clock).call(call)
    assert call.calls == 1 and clock.sleeps == []  # no stall: the chain falls back and its cooldown honours it
    call = Flaky(down(retry_after=60.0))
    assert RetryPolicy(attempts=5, transient=transient, max_retry_after_s=30, clamp_retry_after=True, clock=clock).call(call) == "ok"
    assert clock.sleeps == [30.0]  # HubSpot's max_backoff_s: cut to the cap, retried


def test_errors_that_are_not_retryable_pass_through_untouched() -> None:
    clock = FakeClock()
    call = Flaky(ValueError("bad request"))
    with pytest.raises(ValueError, match="bad request"):
        RetryPolicy(attempts=5, transient=transient, clock=clock).call(call)
    assert call.calls == 1 and clock.sleeps == []


def test_load_waits_do_not_use_up_attempts_and_stop_after_the_waited_total() -> None:
    """The provider's 429 accounting: no attempt used, every wait handed to the shared gate (no sleep here),
    and once the next wait would pass max_load_wait_s the caller words the error."""
    clock, held = FakeClock(), list[float]()
    policy = RetryPolicy(
        attempts=1,
        transient=transient,
        load=limited,
        max_retry_after_s=30,
        max_load_wait_s=0.7,
        hold=held.append,
        clock=clock,
        give_up=lambda why: RuntimeError(f"{why.reason}: waited {why.waited_s:g}s, next {why.wait_s:g}s"),
    )
    ok = Flaky(down(0.3, 429), down(0.3, 429))
    assert policy.call(ok) == "ok" and held == [0.3, 0.3] and clock.sleeps == []
    forever = Flaky(*[down(0.3, 429)] * 5)
    with pytest.raises(RuntimeError, match=r"^waited: waited 0.6s, next 0.3s$"):
        policy.call(forever)
    assert forever.calls == 3  # sent, waited 0.3 s twice; a third wait would pass 0.7 s


def test_load_and_transient_failures_are_counted_apart() -> None:
    clock = FakeClock()
    policy = RetryPolicy(attempts=2, transient=transient, load=limited, gate=lambda: 2.5, clock=clock)
    call = Flaky(down(status=500), down(None, 429), down(None, 429), down(status=500))
    with pytest.raises(ProviderUnavailable, match="HTTP 500"):
        policy.call(call)
    assert call.calls == 4  # one transient retry (attempts=2), the 429s in between did not count
    assert clock.sleeps[1:3] == [2.5, 2.5]  # a 429 without Retry-After waits what the rate headers said (the gate)


def test_give_up_words_the_error_for_the_caller() -> None:
    seen: list[GiveUp] = []

    def word(why: GiveUp) -> Exception:
        seen.append(why)
        return RetriableConnectorError(f"CRM search: {why.error}; gave up after {why.attempts} attempts")

    with pytest.raises(RetriableConnectorError) as info:
        RetryPolicy(attempts=2, transient=transient, give_up=word, clock=FakeClock()).call(Flaky(down(), down(), down()))
    assert str(info.value) == "CRM search: HTTP 503; gave up after 2 attempts"
    assert seen[0].reason == "attempts" and info.value.__cause__ is None


def test_each_retry_decision_is_one_masked_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    register_secret("tok-ECHOED-4711")
    caplog.set_level(logging.DEBUG, logger="crmsync.retry")
    with pytest.raises(ProviderUnavailable):
        RetryPolicy(attempts=2, transient=transient, clock=FakeClock(), name="fast").call(Flaky(down(), down()))
    lines = [r.getMessage() for r in caplog.records if r.name == "crmsync.retry"]
    assert len(lines) == 2 and lines[0].startswith("fast: attempt 1/2 failed (ProviderUnavailable: HTTP 503); retrying in ")
    assert lines[1] == "fast: attempt 2/2 failed (ProviderUnavailable: HTTP 503); giving up (attempts, wait 0.00s, waited 0.0s)"
    call = Flaky(ProviderUnavailable("server says tok-ECHOED-4711 is wrong", status=500))
    with pytest.raises(ProviderUnavailable):
        RetryPolicy(attempts=1, transient=transient, clock=FakeClock(), name="fast").call(call)
    assert "tok-ECHOED-4711" not in caplog.text and "server says *** is wrong" in caplog.text


@pytest.mark.parametrize(
    "headers, seconds",
    [
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "1.5"}, 1.5),  # a plain dict keeps the server's case
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "nan"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after(headers: object, seconds: float | None) -> None:
    assert parse_retry_after(headers) == seconds


# -- environment-variable names and masking -----------------------------------------------------------------
NAME_ERROR = (
    "must be the NAME of an environment variable (upper-case letters, digits and _ such as OPENAI_API_KEY), "
    "not the key itself; the value you gave was not shown."
)


def test_a_token_pasted_into_hubspot_config_is_refused_with_the_exact_message(tmp_path: Path) -> None:
    token = "pat-na1-5c7e2a90-1b3d-4f6a-8c9e-0d2b4f6a8c1e"
    path = tmp_path / "c.toml"
    path.write_text(f'[crm]\ntype = "hubspot"\n[crm.options]\naccess_token_env = "{token}"\n')
    with pytest.raises(ConfigError) as info:
        build_connector(load_config(path))
    assert str(info.value) == f"{path}: 1 problem(s):\n  - `crm.options.access_token_env`: {NAME_ERROR}"


def test_env_var_name_type_hides_the_value_even_in_a_raw_validation_error() -> None:
    class Options(BaseModel):
        key_env: EnvVarName

    assert Options(key_env="_MY_KEY_2").key_env == "_MY_KEY_2"
    with pytest.raises(ValidationError) as info:
        Options(key_env="sk-proj-abc123")
    assert info.value.errors()[0]["type"] == "env_var_name" and "sk-proj-abc123" not in str(info.value.errors()[0]["msg"])


def test_masking_has_one_minimum_length() -> None:
    s = Secrets()
    short, long = "x" * (MIN_SECRET_LEN - 1), "y" * MIN_SECRET_LEN
    s.add(short)
    s.add(long)
    assert MIN_SECRET_LEN == 6 and len(s) == 1
    assert s.redact(f"{short} {long}") == f"{short} ***"


# -- the label rule ---------------------------------------------------------------------------------------
WHEN = datetime(2026, 11, 1, tzinfo=UTC)
CONVERTED = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    "decision, converted, disqualified, expected",
    [
        (" Qualified ", False, True, ("qualified", "review", WHEN)),  # the reviewer wins over everything
        ("unqualified", True, False, ("unqualified", "review", WHEN)),
        (None, True, True, ("qualified", "conversion", CONVERTED)),  # then a conversion, dated when it happened
        ("maybe", False, True, ("unqualified", "conversion", WHEN)),  # then a lost lead
        ("", False, False, None),
    ],
)
def test_review_then_conversion_then_disqualified(decision: object, converted: bool, disqualified: bool, expected: tuple | None) -> None:
    label = harvest_label(
        "L1",
        {"company": "Acme"},
        decision=decision,
        converted=converted,
        disqualified=disqualified,
        modified_at=WHEN,
        converted_at=CONVERTED,
    )
    if expected is None:
        assert label is None
    else:
        assert label == LabelRecord("L1", {"company": "Acme"}, *expected)


def test_one_of_ignores_case_and_blanks_but_not_emptiness() -> None:
    assert one_of("Closed - Not Converted ", ["closed - not converted"])
    assert not one_of("", [""]) and not one_of(None, ["customer"]) and not one_of("lead", ["customer"])


# -- one copy of each ------------------------------------------------------------------------------------
def test_no_fake_clock_in_shipped_code() -> None:
    assert not hasattr(crmsync_hubspot, "FakeClock") and "FakeClock" not in crmsync_hubspot.__all__
    shipped = [*(ROOT / "crmsync").rglob("*.py"), *(ROOT / "connectors").rglob("*.py")]
    fakes = [p for p in shipped for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.ClassDef) and "Fake" in node.name]
    assert fakes == []


def test_connectors_keep_no_retry_loop_or_redactor_of_their_own() -> None:
    for path in (ROOT / "connectors").rglob("*.py"):
        text = path.read_text()
        assert "from tenacity" not in text and "import random" not in text, path  # retries: crmsync.support.RetryPolicy
        assert "def _retry_after" not in text and "MIN_SECRET" not in text, path
