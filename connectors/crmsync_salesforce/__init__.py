"""Placeholder: the salesforce connector is being written."""
