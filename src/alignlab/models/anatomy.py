"""A structural map of a decoder-only transformer: embeddings, blocks, residual writers, norms, head.

Discovery is structural: the block list is the ModuleList whose length is the config's layer count; a
norm is a module whose parameters are all d-sized vectors; residual writers are found inside each
block's attention and MLP containers by a small explicit table of known module names, validated by
their shapes (the output axis must be d). Whether a norm sits before or after its sublayer is found by
data flow during one 4-token forward pass (does the norm's output feed the sublayer, or does it read the
sublayer's output?), never by the norm's name: ``post_attention_layernorm`` is the pre-MLP norm in Llama
but normalises the attention output in Gemma-2.

Anything with parameters that the map cannot place raises ``ArchitectureError`` naming it; a writer is
never skipped silently.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from alignlab.errors import ArchitectureError

# Known container and writer names (the "small explicit table"); every match is shape-checked.
ATTN_CONTAINERS = ("self_attn", "attn", "attention", "self_attention")
MLP_CONTAINERS = ("mlp", "block_sparse_moe", "feed_forward", "moe")
ATTN_WRITERS = ("o_proj", "c_proj", "dense", "out_proj", "wo")
ATTN_READERS = ("q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value", "Wqkv", "q_norm", "k_norm")
MLP_WRITERS = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2")
EXPERT_CONTAINERS = ("experts",)
SHARED_EXPERT_CONTAINERS = ("shared_expert", "shared_experts")

Role = Literal["attn", "mlp", "expert", "shared_expert"]
Placement = Literal["pre_attn", "post_attn", "pre_mlp", "post_mlp"]


@dataclass(frozen=True)
class Writer:
    """One module (or fused parameter) whose output is added to the residual stream."""

    name: str
    """Qualified module name (for ``experts3d``: the qualified parameter name)."""
    role: Role
    kind: Literal["linear", "conv1d", "experts3d"]
    has_bias: bool
    d_axis: int = 0
    """For ``experts3d``: the axis of the [experts, ., .] parameter that has size d."""


@dataclass(frozen=True)
class NormInfo:
    name: str
    placement: Placement


@dataclass(frozen=True)
class BlockMap:
    index: int
    name: str
    attn: str
    mlp: str
    writers: tuple[Writer, ...]
    norms: tuple[NormInfo, ...]

    @property
    def post_attn_norm(self) -> str | None:
        return next((n.name for n in self.norms if n.placement == "post_attn"), None)

    @property
    def post_mlp_norm(self) -> str | None:
        return next((n.name for n in self.norms if n.placement == "post_mlp"), None)


@dataclass(frozen=True)
class Anatomy:
    family: str
    n_layers: int
    d_model: int
    embedding_name: str
    position_embedding_name: str | None
    blocks_name: str
    block_maps: tuple[BlockMap, ...]
    final_norm_name: str
    unembedding_name: str
    tied_embeddings: bool
    model_ref: Any = field(repr=False, compare=False)

    @property
    def model(self) -> nn.Module:
        model = self.model_ref()
        if model is None:
            raise ArchitectureError("the model this anatomy maps was garbage-collected; call map_model again")
        return model

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.model.get_submodule(self.blocks_name))

    @property
    def embedding(self) -> nn.Module:
        return self.module(self.embedding_name)

    @property
    def final_norm(self) -> nn.Module:
        return self.module(self.final_norm_name)

    @property
    def unembedding(self) -> nn.Module:
        return self.module(self.unembedding_name)

    @property
    def norm_placement(self) -> str:
        placements = {n.placement for b in self.block_maps for n in b.norms}
        has_pre = bool(placements & {"pre_attn", "pre_mlp"})
        has_post = bool(placements & {"post_attn", "post_mlp"})
        return "pre+post" if has_pre and has_post else ("post" if has_post else "pre")

    def writers(self) -> list[Writer]:
        return [w for b in self.block_maps for w in b.writers]

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "tied_embeddings": self.tied_embeddings,
            "norm_placement": self.norm_placement,
            "embedding": self.embedding_name,
            "position_embedding": self.position_embedding_name,
            "blocks": self.blocks_name,
            "final_norm": self.final_norm_name,
            "unembedding": self.unembedding_name,
            "writers": [[w.name for w in b.writers] for b in self.block_maps],
            "norms": [{n.name: n.placement for n in b.norms} for b in self.block_maps],
        }


_CACHE: weakref.WeakKeyDictionary[nn.Module, Anatomy] = weakref.WeakKeyDictionary()


def map_model(model: nn.Module, *, refresh: bool = False) -> Anatomy:
    """Map ``model``'s structure (cached per model object; ``refresh=True`` recomputes)."""
    if not refresh and model in _CACHE:
        return _CACHE[model]
    from alignlab.models.trace import trace_norm_placement

    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n_layers = int(_first_attr(config, ("num_hidden_layers", "n_layer", "num_layers")))
    blocks_name, blocks = _find_blocks(model, n_layers)
    embedding = model.get_input_embeddings()
    d_model = int(embedding.weight.shape[1])
    names = {id(m): n for n, m in model.named_modules()}
    base_name = blocks_name.rsplit(".", 1)[0] if "." in blocks_name else ""
    base = model.get_submodule(base_name) if base_name else model
    pos_name, final_norm_name = _map_base(base, base_name, embedding, blocks, d_model)
    unembedding = model.get_output_embeddings()
    if unembedding is None:
        raise ArchitectureError("no output embedding (lm_head) found: only causal LMs with a head are supported")
    tied = unembedding.weight.data_ptr() == embedding.weight.data_ptr()
    for i, block in enumerate(blocks):  # structure first: fail on unknown parts before running anything
        _map_block(i, f"{blocks_name}.{i}", block, d_model, None)
    placements = trace_norm_placement(model, blocks, blocks_name)
    block_maps = tuple(
        _map_block(i, f"{blocks_name}.{i}", block, d_model, placements[i]) for i, block in enumerate(blocks)
    )
    anatomy = Anatomy(
        family=str(getattr(config, "model_type", type(model).__name__)),
        n_layers=n_layers,
        d_model=d_model,
        embedding_name=names[id(embedding)],
        position_embedding_name=pos_name,
        blocks_name=blocks_name,
        block_maps=block_maps,
        final_norm_name=final_norm_name,
        unembedding_name=names[id(unembedding)],
        tied_embeddings=tied,
        model_ref=weakref.ref(model),
    )
    _CACHE[model] = anatomy
    return anatomy


def _first_attr(config: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        if getattr(config, name, None) is not None:
            return getattr(config, name)
    raise ArchitectureError(f"config has none of {names}: cannot tell the number of layers")


def _find_blocks(model: nn.Module, n_layers: int) -> tuple[str, nn.ModuleList]:
    candidates = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers and len({type(m) for m in mod}) == 1
    ]
    if not candidates:
        raise ArchitectureError(
            f"no list of {n_layers} identical decoder blocks found in {type(model).__name__}; "
            "alignlab supports decoder-only transformers whose blocks sit in one ModuleList"
        )
    # The outermost such list is the decoder stack (an inner one would be e.g. a list of experts).
    return min(candidates, key=lambda c: c[0].count("."))


def is_norm(module: nn.Module, d_model: int) -> bool:
    params = list(module.parameters(recurse=False))
    children_params = any(True for c in module.children() for _ in c.parameters())
    return bool(params) and not children_params and all(p.ndim == 1 and p.shape[0] == d_model for p in params)


def _map_base(
    base: nn.Module, base_name: str, embedding: nn.Module, blocks: nn.ModuleList, d_model: int
) -> tuple[str | None, str]:
    pos_name: str | None = None
    norms: list[str] = []
    unknown: list[str] = []
    prefix = f"{base_name}." if base_name else ""
    for child_name, child in base.named_children():
        if child is embedding or child is blocks or not any(True for _ in child.parameters()):
            continue
        if isinstance(child, nn.Embedding) and child.weight.shape[1] == d_model:
            pos_name = prefix + child_name  # e.g. GPT-2's learned position embedding: a residual writer
        elif is_norm(child, d_model):
            norms.append(prefix + child_name)
        elif child_name == "lm_head":
            continue
        else:
            unknown.append(prefix + child_name)
    if unknown:
        raise ArchitectureError(f"unmapped modules with parameters outside the blocks: {', '.join(unknown)}")
    if len(norms) != 1:
        raise ArchitectureError(f"expected exactly one final norm next to the blocks, found {norms or 'none'}")
    return pos_name, norms[0]


def _out_dim(module: nn.Module) -> int | None:
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, Conv1D):
        return module.nf
    return None


def _linear_writer(module: nn.Module, name: str, role: Role) -> Writer:
    from transformers.pytorch_utils import Conv1D

    kind = "conv1d" if isinstance(module, Conv1D) else "linear"
    return Writer(name=name, role=role, kind=kind, has_bias=getattr(module, "bias", None) is not None)


def _map_block(
    index: int, name: str, block: nn.Module, d_model: int, placements: dict[str, Placement] | None
) -> BlockMap:
    attn = mlp = None
    norms: list[NormInfo] = []
    unknown: list[str] = []
    for child_name, child in block.named_children():
        if not any(True for _ in child.parameters()):
            continue
        if is_norm(child, d_model):
            if placements is None:
                continue
            if child_name not in placements:
                raise ArchitectureError(f"{name}.{child_name}: a norm that neither feeds nor reads a sublayer")
            norms.append(NormInfo(f"{name}.{child_name}", placements[child_name]))
        elif child_name in ATTN_CONTAINERS and attn is None:
            attn = child_name
        elif child_name in MLP_CONTAINERS and mlp is None:
            mlp = child_name
        else:
            unknown.append(child_name)
    missing = [part for part, found in (("attention", attn), ("mlp", mlp)) if found is None]
    if unknown or missing:
        raise ArchitectureError(
            f"block {name}: unmapped parts {unknown or '-'}; not found: {missing or '-'} "
            f"(known attention names {ATTN_CONTAINERS}, mlp names {MLP_CONTAINERS})"
        )
    assert attn is not None and mlp is not None
    writers = _attn_writers(f"{name}.{attn}", block.get_submodule(attn), d_model)
    writers += _mlp_writers(f"{name}.{mlp}", block.get_submodule(mlp), d_model)
    return BlockMap(index, name, f"{name}.{attn}", f"{name}.{mlp}", tuple(writers), tuple(norms))


def _attn_writers(prefix: str, attn: nn.Module, d_model: int) -> list[Writer]:
    writers: list[Writer] = []
    for child_name, child in attn.named_children():
        out = _out_dim(child)
        if child_name in ATTN_WRITERS and out == d_model:
            writers.append(_linear_writer(child, f"{prefix}.{child_name}", "attn"))
        elif out == d_model and child_name not in ATTN_READERS:
            raise ArchitectureError(f"{prefix}.{child_name}: d-wide output of unknown role inside attention")
    if len(writers) != 1:
        raise ArchitectureError(f"{prefix}: expected one attention output projection {ATTN_WRITERS}, found {len(writers)}")
    return writers


def _mlp_writers(prefix: str, mlp: nn.Module, d_model: int, role: Role = "mlp") -> list[Writer]:
    writers: list[Writer] = []
    for child_name, child in mlp.named_children():
        qual = f"{prefix}.{child_name}"
        if child_name in EXPERT_CONTAINERS:
            writers += _expert_writers(qual, child, d_model)
        elif child_name in SHARED_EXPERT_CONTAINERS:
            writers += _mlp_writers(qual, child, d_model, role="shared_expert")
        elif _out_dim(child) == d_model:
            if child_name not in MLP_WRITERS:
                raise ArchitectureError(f"{qual}: d-wide output of unknown role inside the MLP")
            writers.append(_linear_writer(child, qual, role))
    if not writers:
        raise ArchitectureError(f"{prefix}: no MLP down projection found (known names {MLP_WRITERS})")
    return writers


def _expert_writers(prefix: str, experts: nn.Module, d_model: int) -> list[Writer]:
    if isinstance(experts, nn.ModuleList):
        found = [w for i, e in enumerate(experts) for w in _mlp_writers(f"{prefix}.{i}", e, d_model, "expert")]
        if len(found) != len(experts):
            raise ArchitectureError(f"{prefix}: {len(experts)} experts but {len(found)} down projections")
        return found
    writers = []
    for pname, param in experts.named_parameters(recurse=False):
        if pname in MLP_WRITERS and param.ndim == 3:
            axes = [a for a in (1, 2) if param.shape[a] == d_model]
            if len(axes) != 1:
                raise ArchitectureError(f"{prefix}.{pname}: cannot tell the d axis of shape {tuple(param.shape)}")
            bias = getattr(experts, f"{pname}_bias", None)
            writers.append(Writer(f"{prefix}.{pname}", "expert", "experts3d", bias is not None, axes[0]))
    if not writers:
        raise ArchitectureError(f"{prefix}: expert container with no recognised down projection {MLP_WRITERS}")
    return writers


def tensor_of(output: Any) -> torch.Tensor:
    """The hidden-state tensor inside a module output (tensor, tuple or ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ArchitectureError(f"cannot find the hidden-state tensor in a {type(output).__name__} output")
