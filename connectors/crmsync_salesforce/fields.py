"""What each mapped field must look like in Salesforce, checked against describe, and how to create it."""

from __future__ import annotations

from typing import Any

from crmsync import FieldsConfig, Problem

#: output name → (accepted describe types, Setup data type, Setup details, suggested label)
OUTPUT_SPECS: dict[str, tuple[set[str], str, str, str]] = {
    "score": ({"double", "int", "percent"}, "Number", "Length 3, Decimal Places 0", "AI Score"),
    "tier": ({"string", "picklist"}, "Text", "Length 10", "AI Tier"),
    "confidence": ({"double", "percent"}, "Percent", "Length 3, Decimal Places 0 (crmsync writes 0-100%)", "AI Confidence"),
    "needs_review": ({"boolean"}, "Checkbox", "Default Value: Unchecked", "AI Needs Review"),
    "reasons": ({"textarea", "string"}, "Text Area (Long)", "Length 2000, Visible Lines 3", "AI Reasons"),
    "scored_at": ({"datetime"}, "Date/Time", "(no options)", "AI Scored At"),
    "rubric_version": ({"string", "picklist"}, "Text", "Length 40", "AI Rubric Version"),
    "model": ({"string", "picklist"}, "Text", "Length 100", "AI Model"),
    "input_hash": ({"string"}, "Text", "Length 40", "AI Input Hash"),
    "probability": ({"double", "percent"}, "Percent", "Length 3, Decimal Places 1 (crmsync writes 0-100%)", "AI Qualified Probability"),
}
DECISION_SPEC = ({"picklist", "string"}, "Picklist", "Values: qualified, unqualified (one per line)", "AI Review Decision")


def field_name_part(api_name: str) -> str:
    return api_name[:-3] if api_name.endswith("__c") else api_name


def how_to_create(obj: str, api_name: str, spec: tuple[set[str], str, str, str], access: str = "Edit") -> str:
    _, dtype, details, label = spec
    if not api_name.endswith("__c"):
        return (
            f"'{api_name}' is not a custom field name. Create the field below, then map the output to its "
            f"API name (ending in __c). " + how_to_create(obj, f"{api_name}__c", spec, access)
        )
    return (
        f"Setup → Object Manager → {obj} → Fields & Relationships → New → Data Type: {dtype} → Next; "
        f"Field Label: {label}; Field Name: {field_name_part(api_name)} (API name {api_name}); {details} → Next; "
        f"Field-Level Security: give the integration user's profile or permission set {access} access → Next; "
        "page layouts as you wish → Save."
    )


def check(obj: str, fields: FieldsConfig, described: dict[str, dict[str, Any]]) -> list[Problem]:
    """Problems with the mapping, judged from ``describe`` (fields hidden by field-level security look missing)."""
    problems: list[Problem] = []
    hidden = " (or the integration user cannot see it: field-level security)"
    for name, api in fields.inputs.items():
        if api not in described:
            problems.append(
                Problem(
                    where=f"fields.inputs.{name}",
                    message=f"{obj} field '{api}' does not exist{hidden}",
                    fix=f"Use the API Name from Setup → Object Manager → {obj} → Fields & Relationships, or give the "
                    "integration user Read access to it",
                )
            )
    for output, api in fields.outputs.model_dump().items():
        if not api:
            continue
        spec = OUTPUT_SPECS[output]
        where = f"fields.outputs.{output}"
        f = described.get(api)
        if f is None:
            problems.append(Problem(where=where, message=f"{obj} field '{api}' does not exist{hidden}", fix=how_to_create(obj, api, spec)))
        elif f.get("type") not in spec[0]:
            problems.append(
                Problem(
                    where=where,
                    message=f"{obj} field '{api}' has type {f.get('type')}; {output} needs one of {sorted(spec[0])}",
                    fix=f"Setup → Object Manager → {obj} → Fields & Relationships → {f.get('label', api)} → Edit → Change "
                    f"Field Type → {spec[1]} ({spec[2]}); or map {output} to another field of that type",
                )
            )
        elif not f.get("updateable"):
            problems.append(
                Problem(
                    where=where,
                    message=f"{obj} field '{api}' is not updateable by the integration user",
                    fix=f"Setup → Object Manager → {obj} → Fields & Relationships → {f.get('label', api)} → Set Field-Level "
                    "Security → tick Visible and clear Read-Only for the integration user's profile (or grant Edit in its permission set)",
                )
            )
    decision = fields.review_decision
    if decision and decision not in described:
        problems.append(
            Problem(
                where="fields.review_decision",
                message=f"{obj} field '{decision}' does not exist{hidden}",
                fix=how_to_create(obj, decision, DECISION_SPEC, access="Read (reviewers need Edit)"),
            )
        )
    return problems


def instructions(obj: str, fields: FieldsConfig, described: dict[str, dict[str, Any]] | None) -> str:
    """Step-by-step Setup instructions for every missing output (and decision) field."""
    steps = []
    for output, api in fields.outputs.model_dump().items():
        if api and (described is None or api not in described):
            steps.append(how_to_create(obj, api, OUTPUT_SPECS[output]))
    if fields.review_decision and (described is None or fields.review_decision not in described):
        steps.append(how_to_create(obj, fields.review_decision, DECISION_SPEC, access="Read (reviewers need Edit)"))
    return "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
