"""Learning from outcomes (issue 15): a learned first step, calibrated probabilities and a drift signal.

Modules, lowest first: ``settings`` (the ``[learn]`` table), ``features`` (inputs → model matrix, leak guard),
``artefact`` (versioned model dirs with a card, promote and rollback), ``drift`` (population stability),
``train`` (fit, guardrails, held-out metrics), ``calibrate`` (chain output → P(qualified)), ``promote`` (the rule that
never replaces a serving model silently) and ``status`` (drift for `crmsync status` and /metrics).
scikit-learn is the ``learn`` extra: it is imported only inside the functions that need it.
"""
