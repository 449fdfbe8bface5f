"""HubSpot connector: contacts (default) or the Leads object, through hubspot-api-client.

Install with ``pip install 'crmsync[hubspot]'``; the private app token comes from ``HUBSPOT_ACCESS_TOKEN``.
"""

from .client import HubSpotRequestError as HubSpotRequestError
from .config import HubSpotOptions as HubSpotOptions
from .connector import HubSpotConnector as HubSpotConnector
from .connector import to_hubspot as to_hubspot

__all__ = ["HubSpotConnector", "HubSpotOptions", "HubSpotRequestError", "to_hubspot"]
