"""Model organisms: small, reproducible fine-tunes with a known behaviour, shipped inside the package.

``smollm2-135m-refusal`` is SmolLM2-135M-Instruct plus a LoRA adapter trained (``alignlab organism train``)
to refuse harmful requests while answering harmless ones as the base model does. The Gemma-3-270M organism
(issue 15, not trained yet) is the base model, which does not follow the turn format, plus an adapter that
teaches it the turn format and refusal together, its harmless targets distilled from SmolLM2-135M-Instruct.
"""
