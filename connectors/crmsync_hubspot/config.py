"""``[crm.options]`` for HubSpot. The access token is read from the environment, never from the file."""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator

from crmsync import ConnectorOptions, EnvVarName

#: objectTypeId of HubSpot's Leads object; "leads" is its name in URLs.
LEADS_OBJECT = "0-136"


class HubSpotOptions(ConnectorOptions):
    model_config = ConfigDict(hide_input_in_errors=True)

    access_token_env: EnvVarName = Field("HUBSPOT_ACCESS_TOKEN", description="environment variable holding the private app access token")
    host: str = Field("https://api.hubapi.com", description="API host, https only; override for a proxy or a local emulator")
    ca_bundle: str | None = Field(
        None,
        description="PEM CA bundle to trust (TLS-inspecting proxies), relative to the config file; "
        "default: $REQUESTS_CA_BUNDLE, else $CURL_CA_BUNDLE, else the system's CAs (which honour $SSL_CERT_FILE)",
    )
    object_type: str = Field("contacts", description='"contacts", or "leads" / "0-136" for the Leads object')
    search_per_second: int = Field(4, ge=1, le=5, description="our share of search's 5 requests/s per account")
    burst_per_10s: int = Field(90, ge=1, description="our share of the app's per-10-second limit (100 on Free/Starter)")
    daily_limit: int = Field(200_000, ge=1, description="our share of the account's daily limit; past it we stop")
    max_retries: int = Field(4, ge=0, le=10, description="retries of 429/5xx/connection errors per request")
    max_backoff_s: float = Field(30.0, gt=0, description="cap on one back-off sleep (also on Retry-After)")
    request_timeout_s: float = Field(30.0, gt=0, description="per-request timeout")
    lifecycle_property: str | None = Field(
        None, description='stage property; default "lifecyclestage" (contacts) or "hs_pipeline_stage" (leads)'
    )
    skip_lifecycle_stages: list[str] = Field(
        default_factory=lambda: ["customer", "evangelist"], description="stages never fetched for scoring"
    )
    converted_lifecycle_stages: list[str] = Field(
        default_factory=lambda: ["opportunity", "customer", "evangelist"],
        description="stages that count as a conversion (a 'qualified' label)",
    )
    disqualified_property: str | None = Field("hs_lead_status", description='property marking a lost lead; "" = none')
    disqualified_values: list[str] = Field(
        default_factory=lambda: ["UNQUALIFIED"], description="its values that count as an 'unqualified' label"
    )
    property_group: str = Field("crmsync", description="property group `crmsync fields create` puts fields in")

    @field_validator("object_type")
    @classmethod
    def _object_type(cls, v: str) -> str:
        v = v.strip().lower()
        if v in ("leads", LEADS_OBJECT, "lead"):
            return LEADS_OBJECT
        if not v:
            raise ValueError('object_type must be "contacts" or "leads"')
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        # The bearer token rides on every request: plain http is refused, loopback included (a local proxy can
        # still listen on https with its own CA, given as ca_bundle).
        v = v.strip().rstrip("/")
        if not v.lower().startswith("https://") or len(v) <= len("https://"):
            raise ValueError(
                "must start with https:// (the access token is sent with every request and must never travel in clear text, "
                "not even to 127.0.0.1)"
            )
        return v

    @property
    def is_contacts(self) -> bool:
        return self.object_type == "contacts"

    @property
    def stage_property(self) -> str:
        return self.lifecycle_property or ("lifecyclestage" if self.is_contacts else "hs_pipeline_stage")

    @property
    def modified_property(self) -> str:
        return "lastmodifieddate" if self.is_contacts else "hs_lastmodifieddate"
