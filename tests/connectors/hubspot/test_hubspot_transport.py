"""HubSpot transport: https only (loopback too), a ca_bundle that reaches the SDK's urllib3 pool (with the
REQUESTS_CA_BUNDLE fallback), and a certificate that fails verification reported as such, at once, never retried."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from crmsync import ConfigError
from crmsync.app import build_connector
from crmsync.config import format_validation_error
from crmsync_hubspot import HubSpotConnector, HubSpotOptions
from crmsync_hubspot.client import HubSpotTLSError

from hubspot_emulator import HubSpotEmulator
from hubspot_harness import TOKEN, Harness


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("host", ["http://127.0.0.1:8080", "http://api.hubapi.com", "api.hubapi.com"])
def test_plain_http_is_refused_even_on_loopback(host: str) -> None:
    with pytest.raises(ValidationError) as exc:
        HubSpotOptions(host=host)
    msg = format_validation_error(exc.value, "crmsync.toml", "", HubSpotOptions, prefix="crm.options.")
    assert msg == (
        "crmsync.toml: 1 problem(s):\n  - `crm.options.host`: must start with https:// (the access token is sent with "
        "every request and must never travel in clear text, not even to 127.0.0.1), got " + repr(host) + "."
    )


def test_ca_bundle_reaches_the_sdk(emulator: HubSpotEmulator, tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    h = Harness(emulator, tmp_path)
    h.setup_fields()
    emulator.calls.clear()
    assert h.connector().check() == []  # ca_bundle = the emulator's CA file
    assert emulator.calls["properties_get"] == 1


def test_relative_ca_bundle_is_read_from_the_config_folder(emulator: HubSpotEmulator, tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    (tmp_path / "proxy-ca.pem").write_bytes(Path(emulator.ca_pem).read_bytes())
    h = Harness(emulator, tmp_path)
    h.setup_fields()
    assert h.connector(ca_bundle="proxy-ca.pem").check() == []


def test_untrusted_certificate_fails_at_once_and_says_what_to_do(
    emulator: HubSpotEmulator, tmp_path: Path, env: pytest.MonkeyPatch
) -> None:
    conn = Harness(emulator, tmp_path).connector(ca_bundle=None, max_retries=4)  # a TLS-inspecting proxy's certificate
    with pytest.raises(HubSpotTLSError) as exc:
        conn.client.properties()
    assert str(exc.value) == (
        f"HubSpot: TLS certificate verification failed for {emulator.host}: unable to get local issuer certificate. "
        "If a proxy inspects TLS, set [crm.options] ca_bundle to its CA file."
    )
    assert conn.client.calls["properties_get"] == 1, "never retried"
    (problem,) = conn.check()
    assert problem.where == "crm.options.ca_bundle" and problem.message == str(exc.value)
    assert problem.fix.startswith("set [crm.options] ca_bundle to the PEM file of the CA")


def test_requests_ca_bundle_is_honoured_as_a_fallback(emulator: HubSpotEmulator, tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    h = Harness(emulator, tmp_path)
    h.setup_fields()
    env.setenv("REQUESTS_CA_BUNDLE", emulator.ca_pem)
    assert h.connector(ca_bundle=None).check() == []


def test_a_missing_ca_file_is_a_config_error(emulator: HubSpotEmulator, tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as exc:
        Harness(emulator, tmp_path).connector(ca_bundle="nope.pem")
    assert str(exc.value) == (
        f"HubSpot: [crm.options] ca_bundle names {tmp_path / 'nope.pem'}, which is not a readable file. Point it at the "
        "PEM file of the CA to trust (a TLS-inspecting proxy's CA), or remove it to trust the system's CAs."
    )
    env.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "gone.pem"))
    with pytest.raises(ConfigError, match=r"HubSpot: REQUESTS_CA_BUNDLE names .*gone\.pem, which is not a readable file"):
        Harness(emulator, tmp_path).connector(ca_bundle=None)


def test_crmsync_check_reports_the_tls_failure(emulator: HubSpotEmulator, make_config, env: pytest.MonkeyPatch) -> None:
    from crmsync.checks import run_checks

    config = make_config(crm={"type": "hubspot", "options": {"host": emulator.host}}, fields={"inputs": {"company": "company"}})
    problems = [p for p in run_checks(config) if p.where.startswith("crm")]
    assert [(p.where, p.message) for p in problems] == [
        (
            "crm.options.ca_bundle",
            (
                f"HubSpot: TLS certificate verification failed for {emulator.host}: unable to get local issuer certificate. "
                "If a proxy inspects TLS, set [crm.options] ca_bundle to its CA file."
            ),
        )
    ]
    assert sum(emulator.calls.values()) == 0, "the handshake failed: no request reached the server"
    conn = build_connector(config)
    assert isinstance(conn, HubSpotConnector)
    assert conn.client.ca_bundle is None  # no option, no fallback: the system's CAs


def test_tls_failure_also_reads_the_sdks_own_wrapping() -> None:
    """With urllib3 retries on, the SDK catches SSLError itself and raises ApiException(status=0, reason=text)."""
    from hubspot.crm.properties import ApiException

    from crmsync_hubspot.client import tls_failure

    wrapped = ApiException(
        status=0,
        reason=(
            "SSLError\nHTTPSConnectionPool(host='api.hubapi.com', port=443): Max retries exceeded (Caused by SSLError("
            "SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed "
            "certificate in certificate chain (_ssl.c:1006)')))"
        ),
    )
    assert tls_failure(wrapped) == "self-signed certificate in certificate chain"
    assert tls_failure(ApiException(status=0, reason="ConnectionRefusedError")) is None
