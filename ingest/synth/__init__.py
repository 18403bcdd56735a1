"""``riskgate synth``: a realistic, labelled, reproducible population of sign-in events in any input format.

Public API::

    from ingest.synth import SynthConfig, synthesize
    report = synthesize(SynthConfig(users=1000, days=30, seed=7), "riskgate-jsonl", "synth.jsonl")

Modules: ``config`` (what is asked and every behavioural parameter),
``catalogue`` (cities and networks from DB-IP Lite), ``agents`` (browsers and
headers), ``population`` (users and devices), ``activity`` (legitimate
sign-ins), ``attacks`` (one generator per attack type), ``render`` and
``writers`` (strings and formats), ``run`` (streaming it all out in time
order).
"""

from ingest.synth.config import ATTACK_TYPES, DEFAULT_START, SynthConfig, SynthParams, parse_start, users_for_events
from ingest.synth.run import SynthReport, formats, synthesize

__all__ = [
    "ATTACK_TYPES",
    "DEFAULT_START",
    "SynthConfig",
    "SynthParams",
    "SynthReport",
    "formats",
    "parse_start",
    "synthesize",
    "users_for_events",
]
