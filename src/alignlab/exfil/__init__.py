"""Upload limits against model-weight exfiltration (spec: shared/specs/upload-limits.md).

Submodules: ``calc`` (time-to-exfiltrate), ``coder``/``arith``/``probmodels`` (LM arithmetic coder),
``proxy``/``budget``/``audit`` (egress meter and limiter). Nothing heavy is imported here.
"""
