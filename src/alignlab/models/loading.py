"""One entry point for loading a causal chat LM: HF id, local directory, ``.gguf`` file or embedded name.

GGUF weights are dequantised once and cached as safetensors (``$ALIGNLAB_CACHE``, default
``~/.cache/alignlab``); later loads read the cache. Pickle checkpoints are refused unless the caller
passes ``allow_pickle=True``; ``trust_remote_code`` is off unless asked for.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignlab.errors import AlignlabError
from alignlab.io import atomic_dir, write_json_atomic
from alignlab.models.embedded import (
    EMBEDDED,
    EmbeddedModel,
    adapter_dir,
    chat_template_file,
    embedded_file,
    stop_tokens_of,
    terms_of,
)

PROVENANCE_FILE = "alignlab_provenance.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "float64": torch.float64}


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    spec: str
    source: str
    """Where the weights were read from (a directory or file)."""
    device: torch.device
    dtype: torch.dtype
    info: dict[str, Any] = field(default_factory=dict)


def cache_root() -> Path:
    return Path(os.environ.get("ALIGNLAB_CACHE", Path.home() / ".cache" / "alignlab"))


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise AlignlabError(f"unknown --device {device!r}: use cpu, cuda, cuda:N, mps or auto") from exc
        _check_available(dev)
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_available(dev: torch.device) -> None:
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AlignlabError(f"--device {dev} asked for CUDA, but this torch build sees no CUDA GPU: use "
                                "--device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AlignlabError(f"--device {dev}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AlignlabError("--device mps is not available on this machine: use --device cpu (or auto)")


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise AlignlabError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    spec: str,
    *,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    chat_template: str | None = None,
    device_map: str | None = None,
) -> LoadedModel:
    """Load ``spec`` (embedded name, HF id, directory or .gguf file) in eval mode."""
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    source, info = resolve_source(spec, allow_pickle=allow_pickle)
    if chat_template is None:
        shipped = chat_template_file(spec)
        chat_template = str(shipped) if shipped is not None else None
    device_map = device_map or auto_device_map(source, dev)
    model, tokenizer = _from_pretrained(source, torch_dtype, dev, allow_pickle, trust_remote_code, device_map)
    if chat_template is not None:
        template_path = Path(chat_template)
        if not template_path.is_file():
            raise AlignlabError(f"chat template file {chat_template} not found")
        tokenizer.chat_template = template_path.read_text(encoding="utf-8")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # no new embeddings (spec §2.2)
    tokenizer.padding_side = "left"
    _add_stop_tokens(model, tokenizer, stop_tokens_of(spec))
    model.eval()
    return LoadedModel(model, tokenizer, spec, str(source), dev, torch_dtype, info)


def _add_stop_tokens(model: Any, tokenizer: Any, tokens: tuple[str, ...]) -> None:
    """Make generation also stop at ``tokens`` (e.g. Gemma's end of turn), keeping the configured EOS ids."""
    config = getattr(model, "generation_config", None)
    if not tokens or config is None:
        return
    ids = config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    for token_id in tokenizer.convert_tokens_to_ids(list(tokens)):
        if token_id is not None and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    config.eos_token_id = ids


def auto_device_map(source: Path | str, device: torch.device) -> str | None:
    """``"auto"`` (accelerate spreads the layers over GPUs and CPU) when a local checkpoint's weights
    exceed 90 % of the free memory of the chosen GPU; None otherwise."""
    if device.type != "cuda" or not Path(source).is_dir():
        return None
    size = sum(f.stat().st_size for f in Path(source).glob("*.safetensors"))
    free, _total = torch.cuda.mem_get_info(device)
    return "auto" if size > 0.9 * free else None


def resolve_source(spec: str, *, allow_pickle: bool = False) -> tuple[Path | str, dict[str, Any]]:
    """Turn a spec into something ``from_pretrained`` reads: a cached directory, a local dir or an HF id."""
    if spec in EMBEDDED:
        terms = terms_of(spec)
        return _embedded_source(spec), {"embedded": spec, **({"terms": terms} if terms else {})}
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise AlignlabError(f"GGUF file {path} not found")
        return gguf_to_cache(path, name=path.stem), {"gguf": str(path)}
    if path.suffix in PICKLE_SUFFIXES:
        _refuse_pickle(path, allow_pickle)
        raise AlignlabError(f"{path}: pass the model directory (with config.json), not a weights file")
    if path.is_dir():
        _check_local_dir(path, allow_pickle)
        return path, {"local": str(path)}
    if path.exists() or spec.startswith((".", "/", "~")):
        raise AlignlabError(f"{spec}: not a model directory, .gguf file or embedded name ({', '.join(EMBEDDED)})")
    from alignlab.models.hub import check_hub_id

    return check_hub_id(spec), {"hub": spec}


def _refuse_pickle(path: Path, allow_pickle: bool) -> None:
    if not allow_pickle:
        raise AlignlabError(
            f"{path} holds pickle weights, which can run arbitrary code when loaded; convert them to safetensors "
            "or pass --allow-pickle (allow_pickle=True) if you trust the file"
        )


def _check_local_dir(path: Path, allow_pickle: bool) -> None:
    if not (path / "config.json").is_file():
        raise AlignlabError(f"{path} has no config.json: not a transformers model directory")
    has_safetensors = any(path.glob("*.safetensors"))
    pickles = [p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and "training_args" not in p.name]
    if not has_safetensors and pickles:
        _refuse_pickle(pickles[0], allow_pickle)


def _embedded_source(name: str) -> Path:
    entry = EMBEDDED[name]
    provenance = {k: v for k, v in {"model": name, "upstream": entry.upstream, "terms": terms_of(name)}.items() if v}
    if entry.parts:
        return gguf_to_cache(_reassembled_gguf(entry), name=name, provenance=provenance)
    if entry.base is None:
        return gguf_to_cache(embedded_file(entry), name=name, provenance=provenance)
    from alignlab.organisms.lora import merged_cache_dir

    return merged_cache_dir(name, entry.base, adapter_dir(entry), provenance={**provenance, "base": entry.base})


def _reassembled_gguf(entry: EmbeddedModel) -> Path:
    """The chunked GGUF of ``entry``, concatenated once into ``cache_root()/gguf`` and checked (SHA-256)."""
    from alignlab.models.chunked import assemble, part_paths, pip_fix

    assert entry.filename is not None and entry.sha256 is not None
    provenance = {"model": entry.name, "upstream": entry.upstream, "terms": entry.terms,
                  "packages": [p.pip_name for p in entry.parts]}
    return assemble(part_paths(entry.parts), cache_root() / "gguf" / entry.filename, entry.sha256,
                    fix=pip_fix(entry.parts, force=True), provenance=provenance)


def _file_key(path: Path) -> str:
    """Cheap content key: size plus SHA-256 of the first and last MiB (the files are 100-250 MB)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def gguf_to_cache(path: Path, *, name: str, provenance: dict[str, Any] | None = None) -> Path:
    """Dequantise a GGUF file once into ``cache_root()/models/<name>-<key>`` (safetensors); return the dir.

    The directory gets ``alignlab_provenance.json``: the GGUF it came from plus ``provenance`` (upstream, terms).
    """
    target = cache_root() / "models" / f"{name}-{_file_key(path)}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_gguf_header(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (ValueError, OSError, KeyError, IndexError, EOFError) as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise AlignlabError(f"cannot read GGUF file {path} ({first}): the file is damaged, truncated or of an "
                            "architecture transformers cannot load; download it again") from exc
    # The dequantised model is an ordinary float model: drop the GGUF quantiser so it can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    record = {"gguf": str(path), "gguf_key": _file_key(path), **(provenance or {})}
    save_pretrained_atomic(model, tokenizer, target, provenance=record)
    return target


def _check_gguf_header(path: Path) -> None:
    """Fail in one line on a file that is not GGUF at all or is cut short (the tensor data it declares is
    missing), before transformers reads it."""
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise AlignlabError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as exc:  # noqa: BLE001 - the reader raises many types on a damaged file
        raise AlignlabError(f"cannot read GGUF file {path} ({type(exc).__name__}): the file is damaged or "
                            "truncated; download it again") from exc
    size = path.stat().st_size
    if end > size:
        raise AlignlabError(f"GGUF file {path} is truncated ({size} bytes, its tensors need {end}): download it "
                            "again")


def save_pretrained_atomic(model: Any, tokenizer: Any, target: Path, provenance: dict[str, Any] | None = None,
                           finish: Callable[[Path], None] | None = None) -> None:
    """``save_pretrained`` into a temporary sibling directory (with ``alignlab_provenance.json`` when
    ``provenance`` is given; ``finish(directory)`` runs last), then rename it into place."""
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if finish is not None:
            finish(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if provenance is not None:
            write_json_atomic(tmp / PROVENANCE_FILE, provenance)


def _from_pretrained(
    source: Path | str,
    dtype: torch.dtype,
    device: torch.device,
    allow_pickle: bool,
    trust_remote_code: bool,
    device_map: str | None,
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise AlignlabError(f"cannot load {source}: {str(exc).splitlines()[0]}") from exc
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        if "trust_remote_code" in msg:
            msg += " (pass --trust-remote-code only if you trust this repository)"
        raise AlignlabError(f"cannot load {source}: {msg}") from exc
    if device_map is None:
        model.to(device)
    return model, tokenizer
