"""The crmsync output properties: their HubSpot definitions and the types that fit them."""

from __future__ import annotations

from typing import Any

FIELD_FIX = "run `crmsync fields create` to create the crmsync property group and the missing output properties"

#: output name → (type, fieldType, label, description); fieldType None means "any".
DEFINITIONS: dict[str, tuple[str, str, str, str]] = {
    "score": ("number", "number", "AI lead score", "Advisory 0-100 lead score written by crmsync."),
    "confidence": ("number", "number", "AI score confidence", "How sure crmsync's model was, 0 to 1."),
    "needs_review": ("bool", "booleancheckbox", "AI score needs review", "crmsync asks a person to check this score."),
    "tier": ("string", "text", "AI lead tier", "Tier derived from the AI lead score."),
    "reasons": ("string", "textarea", "AI score reasons", "Why crmsync's model gave this score."),
    "scored_at": ("datetime", "date", "AI scored at", "When crmsync last scored this record."),
    "rubric_version": ("string", "text", "AI rubric version", "Version of the scoring rubric used."),
    "model": ("string", "text", "AI model", "Model that produced the score."),
    "input_hash": ("string", "text", "AI input hash", "Fingerprint of the inputs the AI score was made from (crmsync ledger rebuild)."),
    "probability": ("number", "number", "AI qualified probability", "Calibrated probability, 0 to 1, that this lead qualifies."),
    "review_decision": ("enumeration", "select", "AI review decision", "A reviewer's verdict; crmsync never overwrites a reviewed record."),
}

#: output name → the HubSpot types that can hold it.
FITTING: dict[str, set[str]] = {
    "score": {"number"},
    "confidence": {"number"},
    "needs_review": {"bool"},
    "tier": {"string", "enumeration"},
    "reasons": {"string"},
    "scored_at": {"datetime"},
    "rubric_version": {"string", "enumeration"},
    "model": {"string", "enumeration"},
    "input_hash": {"string"},
    "probability": {"number"},
    "review_decision": {"string", "enumeration"},
}

_OPTIONS = {
    "needs_review": [("Yes", "true"), ("No", "false")],
    "review_decision": [("Qualified", "qualified"), ("Unqualified", "unqualified")],
}


def definitions(name: str, prop: str, group: str) -> dict[str, Any]:
    type_, field_type, label, description = DEFINITIONS[name]
    body: dict[str, Any] = {
        "name": prop,
        "label": label,
        "type": type_,
        "fieldType": field_type,
        "groupName": group,
        "description": description,
    }
    if name in _OPTIONS:
        body["options"] = [{"label": lab, "value": val, "displayOrder": i, "hidden": False} for i, (lab, val) in enumerate(_OPTIONS[name])]
    return body


def type_problem(name: str, prop: Any) -> str | None:
    """Why an existing property cannot hold this output, or None when it fits."""
    fitting = FITTING.get(name)
    if fitting and prop.type not in fitting:
        return f"has type {prop.type!r} ({prop.field_type}); {name} needs {' or '.join(sorted(fitting))}"
    meta = getattr(prop, "modification_metadata", None)
    if name != "review_decision" and meta is not None and getattr(meta, "read_only_value", False):
        return "is read-only; crmsync cannot write it"
    if getattr(prop, "calculated", False):
        return "is a calculated property; crmsync cannot write it"
    return None
