"""The Salesforce client retries through crmsync.support's one policy, on the clock the connector is given."""

from __future__ import annotations

import time

import pytest

from crmsync import RetriableConnectorError, ScoreUpdate
from tests.fakes import FakeClock


def test_retry_waits_go_to_the_injected_clock_with_backoff(make, emulator) -> None:
    lead = emulator.add({"Company": "Co"})
    clock = FakeClock()
    conn = make(max_retries=3, retry_base_s=2.0, clock=clock)
    conn.describe()
    emulator.script = [("status", 503, "SERVER_UNAVAILABLE"), ("drop",)]
    started = time.monotonic()
    assert conn.write([ScoreUpdate(lead, {"AI_Score__c": 61})])[0].ok
    assert time.monotonic() - started < 2.0, "nothing slept for real"
    assert len(clock.sleeps) == 2
    assert 1.5 <= clock.sleeps[0] <= 2.0 and 3.0 <= clock.sleeps[1] <= 4.0  # retry_base_s, doubled, jittered
    assert emulator.records["Lead"][lead]["AI_Score__c"] == 61


def test_gives_up_after_max_retries_with_the_attempts_named(make, emulator) -> None:
    lead = emulator.add({"Company": "Co"})
    clock = FakeClock()
    conn = make(max_retries=1, retry_base_s=30.0, clock=clock)
    conn.describe()
    emulator.script = [("status", 503, "SERVER_UNAVAILABLE")] * 2
    with pytest.raises(RetriableConnectorError) as err:
        conn.write([ScoreUpdate(lead, {"AI_Score__c": 61})])
    assert str(err.value) == "Salesforce update: HTTP 503 SERVER_UNAVAILABLE after 2 attempts; will try again later"
    assert len(clock.sleeps) == 1 and 22.5 <= clock.sleeps[0] <= 30.0  # capped at 30 s
