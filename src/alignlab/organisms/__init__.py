"""Model organisms: small, reproducible fine-tunes with a known behaviour, shipped inside the package.

``smollm2-135m-refusal`` is SmolLM2-135M-Instruct plus a LoRA adapter trained (``alignlab organism train``)
to refuse harmful requests while answering harmless ones as the base model does.
"""
