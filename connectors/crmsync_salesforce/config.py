"""``[crm.options]`` for Salesforce: one small auth class per mode, secrets only as environment variable names."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crmsync import ConnectorOptions, EnvVarName


class _Auth(BaseModel):
    # Every *_env key is an EnvVarName: a pasted secret is refused and never echoed (crmsync.support).
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class ClientCredentialsAuth(_Auth):
    """OAuth 2.0 client credentials: a connected app with a "Run As" integration user. Needs a My Domain."""

    mode: Literal["client_credentials"]
    consumer_key_env: EnvVarName = Field("SF_CONSUMER_KEY", description="env var holding the connected app's consumer key")
    consumer_secret_env: EnvVarName = Field("SF_CONSUMER_SECRET", description="env var holding its consumer secret")


class JwtAuth(_Auth):
    """OAuth 2.0 JWT bearer: a connected app with a certificate; the user must be pre-authorised."""

    mode: Literal["jwt"]
    username: str = Field(description="the integration user's username")
    consumer_key_env: EnvVarName = "SF_CONSUMER_KEY"
    private_key_file: str | None = Field(None, description="PEM private key file (relative to the config file)")
    private_key_env: EnvVarName | None = Field("SF_PRIVATE_KEY", description="env var holding the PEM key, if no file")


class PasswordAuth(_Auth):
    """Username + password + security token (SOAP login). Prefer an OAuth mode where you can."""

    mode: Literal["password"]
    username: str
    password_env: EnvVarName = "SF_PASSWORD"
    security_token_env: EnvVarName | None = Field("SF_SECURITY_TOKEN", description="None for IP-allowlisted users")


class AccessTokenAuth(_Auth):
    """A ready access token and its instance URL (e.g. from `sf org display`). Cannot be renewed by crmsync."""

    mode: Literal["access_token"]
    access_token_env: EnvVarName = "SF_ACCESS_TOKEN"


AuthConfig = Annotated[ClientCredentialsAuth | JwtAuth | PasswordAuth | AccessTokenAuth, Field(discriminator="mode")]


class SalesforceOptions(ConnectorOptions):
    model_config = ConfigDict(hide_input_in_errors=True)

    auth: AuthConfig
    object: str = Field("Lead", pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="sObject to score: Lead or Contact")
    domain: str = Field("login", pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$", description="login, test (sandbox) or a My Domain such as acme.my")
    instance_url: str | None = Field(None, pattern=r"^https://", description="https://acme.my.salesforce.com; required for access_token")
    api_version: str = Field("59.0", pattern=r"^\d{2,3}\.0$")
    skip_converted: bool = Field(True, description="Lead only: never fetch converted leads")
    disqualified_statuses: list[str] = Field(
        default_factory=lambda: ["Closed - Not Converted"], description="Lead Status values that count as 'unqualified' labels"
    )
    max_api_share: float = Field(0.5, gt=0, le=1, description="stop starting new work past this share of the org's daily API allocation")
    page_size: int = Field(2000, ge=200, le=2000, description="Sforce-Query-Options batchSize")
    ca_bundle: str | None = Field(None, description="PEM CA bundle to trust (TLS-inspecting proxies); relative to the config file")
    request_timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(3, ge=0, le=10, description="retries of 5xx / dropped connections per call")
    retry_base_s: float = Field(1.0, ge=0, description="first backoff; doubles per retry, with jitter")

    @model_validator(mode="after")
    def _cross_checks(self) -> SalesforceOptions:
        if isinstance(self.auth, ClientCredentialsAuth) and self.domain in ("login", "test"):
            raise ValueError(
                'auth.mode = client_credentials needs your My Domain in `domain` (e.g. domain = "acme.my" for '
                "https://acme.my.salesforce.com); Salesforce refuses this flow on login/test"
            )
        if isinstance(self.auth, AccessTokenAuth) and not self.instance_url:
            raise ValueError("auth.mode = access_token needs `instance_url` (the 'Instance Url' that `sf org display` prints)")
        if isinstance(self.auth, JwtAuth) and not (self.auth.private_key_file or self.auth.private_key_env):
            raise ValueError("auth.mode = jwt needs `private_key_file` or `private_key_env`")
        return self
