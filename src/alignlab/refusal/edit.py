"""Weight orthogonalisation (spec §2.9, §2.10): bake directional ablation into the weights.

Every residual writer is edited in output space so that it can no longer write along r̂: a Linear
[out=d, in] becomes W - r̂(r̂ᵀW) (bias b - (r̂·b)r̂), an embedding [vocab, d] becomes E - (Er̂)r̂ᵀ, a GPT-2
Conv1D [in, d] likewise on its rows, fused experts per expert along their d axis. A tied head is
untied first: the final norm's gain re-creates an r-component, so the head must stay as it was.
For models with a norm between a writer and the residual add (Gemma-2/3, OLMo-2) no weight edit is
exact; policy ``approximate`` uses W <- W - Γ⁺r̂(r̂ᵀΓW) (Γ⁺ = Γ⁻¹ where the gain is not near 0) so the write is
r-free up to a per-token scale and r̂'s weight on near-zero gains. Gemma-3-270M has such coordinates in 34 of its
36 post-sublayer norms; inverting them (Γ⁻¹) blew those coordinates of the write up, and the earlier fallback to
the naive edit made ``approximate`` equal ``naive`` there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from alignlab.errors import AlignlabError, ArchitectureError
from alignlab.models.anatomy import Anatomy, BlockMap, Writer, map_model
from alignlab.refusal.config import EditConfig
from alignlab.refusal.head import HeadCorrection, attach, attached, correction

if TYPE_CHECKING:
    from alignlab.refusal.weights import LayerWeights


# ---- pure functions on tensors (r: unit vector [d]) ------------------------------------------------
def project_out_columns(W: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """W [d, in] -> PW = W - r(rᵀW): the output space (rows index d) loses r."""
    return W - torch.outer(r, r @ W)


def project_out_rows(W: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """W [n, d] -> WP = W - (Wr)rᵀ: each row (a write vector in d space) loses r."""
    return W - torch.outer(W @ r, r)


def project_out_vector(b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return b - (b @ r) * r


# in-place forms of the same edits, used on the model's weights: no temporary the size of W (the embedding's
# outer product alone was 113 MB on SmolLM2, two of them the peak of a whole `refusal run`)
def project_out_columns_(W: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """In place: W [d, in] <- W - r(rᵀW)."""
    return W.addr_(r, r @ W, alpha=-1)


def project_out_rows_(W: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """In place: W [n, d] <- W - (Wr)rᵀ."""
    return W.addr_(W @ r, r, alpha=-1)


EDIT_REVISION = 2
"""Bumped when the edit's arithmetic changes (2: Γ⁺ for near-zero post-norm gains); part of the edit stage's
artifact key, so a run directory made by an older edit recomputes the edit, its gap and the edited condition."""
GAIN_RTOL = 1e-3
"""Gain coordinates below this fraction of the largest |γ| are not inverted (Γ⁺ instead of Γ⁻¹)."""


def inverse_gain(gamma: torch.Tensor) -> torch.Tensor:
    """Γ⁺ of a norm's gain γ [d]: 1/γ_i where |γ_i| >= GAIN_RTOL·max|γ|, else 0 (a coordinate the norm nearly
    zeroes is left as it is: inverting it would blow that coordinate of the write up by 1/γ_i)."""
    keep = gamma.abs() >= GAIN_RTOL * gamma.abs().max()
    return torch.where(keep, 1.0 / torch.where(keep, gamma, torch.ones_like(gamma)), torch.zeros_like(gamma))


def postnorm_columns(W: torch.Tensor, r: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """W [d, in] -> W - Γ⁺r(rᵀΓW): after the post-norm's gain Γ the write has no r-component (exactly when every
    γ_i is invertible; else the left-over fraction is r's weight on the near-zero gains, Σ r_i²)."""
    return W - torch.outer(r * inverse_gain(gamma), r @ (gamma[:, None] * W))


def postnorm_columns_(W: torch.Tensor, r: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """In place: W [d, in] <- W - Γ⁺r(rᵀΓW), with rᵀΓW computed as (r∘γ)ᵀW."""
    return W.addr_(r * inverse_gain(gamma), (r * gamma) @ W, alpha=-1)


def preserve_column_norms(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Rescale each column (one write vector per input neuron) of ``new`` [d, in] to ``old``'s norm."""
    return new * (old.norm(dim=0, keepdim=True) / new.norm(dim=0, keepdim=True).clamp_min(1e-12))


def row_normalised_edit(W: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Normalise each output row of W [d, in] over its inputs, project, restore the row norms."""
    norms = W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    edited = project_out_columns(W / norms, r)
    return edited * (norms / edited.norm(dim=1, keepdim=True).clamp_min(1e-12))


# ---- model-level edit ---------------------------------------------------------------------------------
@dataclass
class EditReport:
    exact: bool
    policy: str
    norm_preserve: str
    writers_edited: int
    embeddings_edited: int
    untied: bool
    notes: list[str] = field(default_factory=list)


def untie_head(model: nn.Module, anatomy: Anatomy, head_mode: str = "clone") -> bool:
    """Give the unembedding its own storage and mark the config untied. Returns True if it was tied.

    ``head_mode="correct"`` on float32/float64 weights keeps the storage shared and attaches a
    ``head.HeadCorrection`` instead (no copy; the embedding edit records its rank-1 terms there)."""
    head = anatomy.unembedding
    if correction(model) is not None:
        return True
    if head.weight.data_ptr() != anatomy.embedding.weight.data_ptr():
        return False
    if head_mode == "correct" and head.weight.dtype in (torch.float32, torch.float64):
        attach(model, head, anatomy.embedding)
        return True
    head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=head.weight.requires_grad)
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.tie_word_embeddings = False
    return True


def norm_gain(norm: nn.Module, d: int) -> torch.Tensor:
    """The elementwise gain γ of an RMS-type norm, measured by probing it with a constant vector."""
    param = next(norm.parameters())
    probe = torch.full((1, d), 1e3, dtype=torch.float32, device=param.device)
    with torch.no_grad():
        gamma = norm(probe.to(param.dtype)).float().squeeze(0) / 1.0
    return gamma.double()


def _edit_param(param: torch.Tensor, fn) -> None:
    """param <- fn(param), computed in float32 (float64 for float64 weights). ``fn`` may edit its argument in
    place: for float32/float64 weights that argument is the parameter's own storage, so nothing is copied."""
    with torch.no_grad():
        work = param.detach().to(torch.float64 if param.dtype == torch.float64 else torch.float32)
        out = fn(work)
        if out.data_ptr() != param.data_ptr() or out.dtype != param.dtype:
            param.copy_(out.to(param.dtype))


def _writer_gamma(anatomy: Anatomy, block: BlockMap, writer: Writer, cfg: EditConfig, rep: EditReport):
    post = block.post_attn_norm if writer.role == "attn" else block.post_mlp_norm
    if post is None:
        return None
    rep.exact = False
    if cfg.postnorm == "refuse":
        raise AlignlabError("this model has norms after its sublayers: the weight edit would be inexact "
                            "(postnorm=refuse); use hook ablation or --postnorm approximate")
    if cfg.postnorm == "naive":
        return None
    gamma = norm_gain(anatomy.module(post), anatomy.d_model)
    small = int((inverse_gain(gamma) == 0).sum())  # the coordinates Γ⁺ leaves uninverted
    if small:
        rep.notes.append(f"{post}: {small} gain coordinates below {GAIN_RTOL:g} of the largest, left uninverted (Γ⁺)")
    return gamma


def _edit_writer(model: nn.Module, writer: Writer, r: torch.Tensor, gamma, cfg: EditConfig) -> None:
    if writer.kind == "experts3d":
        param = model.get_parameter(writer.name)

        def fn(W):  # [E, ., .] with d on d_axis
            Wd = W.movedim(writer.d_axis, 1)  # [E, d, in]
            rr = r.to(W)
            out = torch.stack([project_out_columns(w, rr) if gamma is None else
                               postnorm_columns(w, rr, gamma.to(W)) for w in Wd])
            return out.movedim(1, writer.d_axis)

        _edit_param(param, fn)
        return
    module = model.get_submodule(writer.name)
    transposed = writer.kind == "conv1d"  # Conv1D stores [in, d]

    def weight_fn(W):
        Wd = W.T if transposed else W
        rr = r.to(Wd)
        if cfg.norm_preserve == "none":  # in place: W.T is a view, so W changes with it
            if gamma is None:
                project_out_columns_(Wd, rr)
            else:
                postnorm_columns_(Wd, rr, gamma.to(Wd))
            return W
        new = project_out_columns(Wd, rr) if gamma is None else postnorm_columns(Wd, rr, gamma.to(Wd))
        if cfg.norm_preserve in ("columns", "biprojected"):
            new = preserve_column_norms(new, Wd)
        elif cfg.norm_preserve == "rows":
            new = row_normalised_edit(Wd, rr)
        return new.T if transposed else new

    _edit_param(module.weight, weight_fn)
    if getattr(module, "bias", None) is not None:
        def bias_fn(b):
            rr = r.to(b)
            if gamma is None:
                return project_out_vector(b, rr)
            g = gamma.to(b)
            return b - (rr @ (g * b)) * rr * inverse_gain(g)

        _edit_param(module.bias, bias_fn)


def _edit_tied_embedding(weight: torch.Tensor, r: torch.Tensor, corr: HeadCorrection) -> None:
    """E <- E - (Er)rᵀ in place (float32/float64), the rank-1 term recorded so the shared head stays E."""
    with torch.no_grad():
        rr = r.to(weight)
        c = weight @ rr  # [vocab]
        weight.addr_(c, rr, alpha=-1)
        corr.add(rr, c)


def orthogonalize(
    model: nn.Module, direction: torch.Tensor, cfg: EditConfig | None = None, anatomy: Anatomy | None = None,
    weights: LayerWeights | None = None, layer_means: torch.Tensor | None = None, head_mode: str = "clone",
) -> EditReport:
    """Edit ``model`` in place so no residual writer can write along ``direction``. Returns what was done.

    With ``weights`` each writer of layer l loses only the fraction w of its r̂-component:
    W - w·r̂(r̂ᵀW) = W - (√w r̂)((√w r̂)ᵀW), i.e. the same edit with r̂ scaled by √w.
    A tied head is cloned (``head_mode="clone"``) or, on float32/float64 weights with ``"correct"``, kept
    shared with a rank-k correction (``refusal/head.py``: no second copy)."""
    cfg = cfg or EditConfig()
    anatomy = anatomy or map_model(model)
    if direction.shape != (anatomy.d_model,) or not torch.isfinite(direction).all():
        raise AlignlabError(f"direction must be a finite vector of width {anatomy.d_model}, got {tuple(direction.shape)}")
    r = direction.double() / direction.double().norm().clamp_min(1e-8)  # exactly unit (spec: ‖r‖+1e-8)
    rep = EditReport(exact=True, policy=cfg.postnorm, norm_preserve=cfg.norm_preserve,
                     writers_edited=0, embeddings_edited=0, untied=untie_head(model, anatomy, head_mode))
    if cfg.norm_preserve != "none":
        rep.exact = False
        rep.notes.append(f"norm_preserve={cfg.norm_preserve} is never exact")
    if weights is not None and len(weights.attn) != anatomy.n_layers:
        raise AlignlabError(f"weights cover {len(weights.attn)} layers; the model has {anatomy.n_layers}")
    per_layer = None
    if cfg.norm_preserve == "biprojected":  # r orthogonal to each layer's harmless mean (jim-plus / grimjim)
        if layer_means is None or layer_means.shape != (anatomy.n_layers, anatomy.d_model):
            raise AlignlabError("the biprojected edit needs the harmless mean of every layer [n_layers, d_model]")
        from alignlab.refusal.variants import layer_directions

        per_layer = layer_directions(r, layer_means)
    r_embed = r if per_layer is None else per_layer[0]
    r_embed = r_embed if weights is None else r_embed * math.sqrt(weights.embed)
    corr = attached(model)
    for name in filter(None, (anatomy.embedding_name, anatomy.position_embedding_name)):
        weight = model.get_submodule(name).weight
        if corr is not None and weight is corr.embedding.weight:
            _edit_tied_embedding(weight, r_embed, corr)
        else:
            _edit_param(weight, lambda E: project_out_rows_(E, r_embed.to(E)))
        rep.embeddings_edited += 1
    for block in anatomy.block_maps:
        for writer in block.writers:
            gamma = _writer_gamma(anatomy, block, writer, cfg, rep)
            rw = r if per_layer is None else per_layer[block.index]
            rw = rw if weights is None else rw * math.sqrt(weights.of(writer.role, block.index))
            _edit_writer(model, writer, rw, gamma, cfg)
            rep.writers_edited += 1
    expected = len(anatomy.writers())
    if rep.writers_edited != expected:  # never a silent partial edit
        raise ArchitectureError(f"edited {rep.writers_edited} of {expected} residual writers")
    if not rep.exact and cfg.postnorm != "naive" and anatomy.norm_placement != "pre":
        rep.notes.append("norms after sublayers: the edit approximates hook ablation (measure the gap)")
    return rep


def orthogonalize_subspace(model: nn.Module, directions: torch.Tensor, cfg: EditConfig | None = None,
                           anatomy: Anatomy | None = None, head_mode: str = "clone") -> EditReport:
    """Edit ``model`` in place so no residual writer can write into the span of ``directions`` [k, d]: one
    rank-1 edit per row of an orthonormal basis Q. Projectors onto orthogonal unit vectors commute and multiply
    to I - QQᵀ, so the result is W - Q(QᵀW), exactly rank-k ablation where the rank-1 edit is exact."""
    from alignlab.refusal.intervene import orthonormal_basis

    anatomy = anatomy or map_model(model)
    basis = orthonormal_basis(directions, anatomy.d_model)
    if len(basis) > 1 and cfg is not None and cfg.norm_preserve != "none":
        raise AlignlabError(f"--norm-preserve {cfg.norm_preserve} edits one direction; a rank-{len(basis)} "
                            "subspace takes the plain projection (--norm-preserve none)")
    reports = [orthogonalize(model, q, cfg, anatomy, head_mode=head_mode) for q in basis]
    first = reports[0]
    notes = list(dict.fromkeys(n for rep in reports for n in rep.notes))
    return EditReport(exact=all(rep.exact for rep in reports), policy=first.policy,
                      norm_preserve=first.norm_preserve, writers_edited=first.writers_edited,
                      embeddings_edited=first.embeddings_edited, untied=any(rep.untied for rep in reports),
                      notes=[f"rank-{len(reports)} subspace: one rank-1 edit per orthonormal basis vector", *notes])
