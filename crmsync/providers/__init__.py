"""LLM providers. Each SDK is imported by exactly one module here."""
