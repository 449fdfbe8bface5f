"""``[crm.options]`` for HubSpot. The access token is read from the environment, never from the file."""
from __future__ import annotations

from pydantic import Field, field_validator

from crmsync import ConnectorOptions

#: objectTypeId of HubSpot's Leads object; "leads" is its name in URLs.
LEADS_OBJECT = "0-136"


class HubSpotOptions(ConnectorOptions):
    access_token_env: str = Field(
        "HUBSPOT_ACCESS_TOKEN", description="environment variable holding the private app access token"
    )
    host: str = Field("https://api.hubapi.com", description="API host; override for a proxy or a local emulator")
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
    disqualified_property: str | None = Field("hs_lead_status", description="property marking a lost lead; \"\" = none")
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
        v = v.rstrip("/")
        if not v.startswith(("https://", "http://")):
            raise ValueError(f"host must start with https:// (got {v!r})")
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
