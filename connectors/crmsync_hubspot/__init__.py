"""Placeholder: the hubspot connector is being written."""
