"""Feature inspection (spec §7): top-activating contexts, histograms, logit effects, direction similarity.

``scan_latents`` streams a corpus through the model (stopping at the hook) and the SAE, keeping a per-latent
top-K of (activation, token row), a uniform sample of each latent's activating tokens (a reservoir: the rows
with the largest i.i.d. uniform keys among the active ones), from which the dashboard draws its
quantile-stratified examples, firing counts, a log10 histogram of each latent's nonzero activations and,
when a direction r is given, the sums needed for corr(f_i, x·r̂). ``run_inspect`` adds logit effects and
direction statistics and renders the self-contained HTML dashboard (``alignlab.sae.dashboard``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError, DataError
from alignlab.sae.activations import (
    ActivationSource,
    ContextConfig,
    Hook,
    hook_of_sae,
    iter_id_batches,
    model_device,
    run_to_hook,
)

HIST_LO, HIST_HI, HIST_BINS = -3.0, 3.0, 48  # log10 activation range of the per-latent histograms


@dataclass(frozen=True)
class InspectConfig:
    """What to scan and how much to show."""

    tokens: int = 32_768
    """Tokens to scan."""
    batch_contexts: int = 16
    """Contexts per LM forward."""
    context_size: int = 128
    """Tokens per context window."""
    prepend_bos: bool | None = None
    """Start every window with BOS (None: whenever the tokenizer has one)."""
    latents: int = 50
    """Latents given a detail section in the dashboard."""
    top_k: int = 20
    """Top-activating contexts kept per latent."""
    window: int = 8
    """Tokens shown either side of the activating token."""
    direction: str | None = None
    """Direction file (safetensors or .npy), [d], [n_layers, d] or [n_pos, n_layers, d]."""
    direction_key: str | None = None
    """Tensor name in a multi-tensor safetensors file."""
    direction_layer: int | None = None
    """Layer index into the direction tensor (default: the SAE's hook layer)."""
    direction_pos: int = -1
    """Position index into a [n_pos, n_layers, d] direction."""
    force: bool = False
    """Accept a direction recorded at a different hook or layer."""
    samples: int = 32
    """Activating tokens sampled uniformly per latent; the dashboard shows them stratified by quantile."""
    bands: int = 4
    """Quantile bands the sampled activating contexts are grouped into (4: quartiles)."""
    seed: int = 0
    """Seed of the per-latent sampling."""

    def __post_init__(self) -> None:
        if min(self.tokens, self.batch_contexts, self.latents, self.top_k, self.samples, self.bands) < 1 or self.window < 0:
            raise AlignlabError("tokens, batch_contexts, latents, top_k, samples and bands must be >= 1 and window >= 0")


@dataclass
class Scan:
    context_ids: Tensor
    """[n_ctx, seq] token ids of every scanned context."""
    row_ctx: Tensor
    """[rows] context index of each kept token row."""
    row_pos: Tensor
    """[rows] position of each kept token row in its context."""
    top_vals: Tensor
    """[top_k, d_sae] largest activations per latent (descending; -inf when unfilled)."""
    top_rows: Tensor
    """[top_k, d_sae] token row of each top activation (-1 when unfilled)."""
    fires: Tensor
    """[d_sae] number of rows where the latent is nonzero."""
    max_act: Tensor
    """[d_sae] maximum activation."""
    hist: Tensor
    """[d_sae, HIST_BINS] counts of log10(nonzero activation) in [HIST_LO, HIST_HI]."""
    sample_vals: Tensor
    """[samples, d_sae] activations of a uniform sample of each latent's activating rows (0 when unfilled)."""
    sample_rows: Tensor
    """[samples, d_sae] token rows of those samples (-1 when unfilled)."""
    corr: Tensor | None
    """[d_sae] Pearson correlation of each latent's activation with x·r̂ (None without a direction)."""
    n_tokens: int


def load_direction(path: str | Path, d: int, hook: Hook, key: str | None = None, layer: int | None = None,
                   pos: int = -1, force: bool = False) -> Tensor:
    """A [d] fp32 direction from a safetensors/.npy file, picking [pos, layer] from higher-rank tensors."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: direction file not found")
    meta: dict[str, str] = {}
    if p.suffix == ".npy":
        import numpy as np

        t = torch.from_numpy(np.load(p, allow_pickle=False))
    elif p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            keys, meta = list(f.keys()), f.metadata() or {}
            name = key or (keys[0] if len(keys) == 1 else next((k for k in ("direction", "r", "refusal_direction") if k in keys), None))
            if name not in keys:
                raise DataError(f"{p}: pick a tensor with --direction-key (tensors: {', '.join(keys)})")
            t = f.get_tensor(name)
    else:
        raise DataError(f"{p}: direction files must be .safetensors or .npy (no pickles)")
    t = t.float()
    recorded = meta.get("hook") or meta.get("hook_name")
    if recorded:  # either spelling: resid_post.15 or blocks.15.hook_resid_post
        from alignlab.sae.saelens_format import hook_address

        recorded = hook_address(recorded)[0]
    if recorded and recorded != hook.address and not force:
        raise AlignlabError(f"{p} was recorded at {recorded}, the SAE reads {hook.address}; pass --force to compare anyway")
    if layer is not None and layer != hook.layer and not force:
        raise AlignlabError(f"--direction-layer {layer} differs from the SAE's layer {hook.layer}; pass --force to compare anyway")
    if t.ndim >= 2:
        li = hook.layer if layer is None else layer
        if not -t.shape[-2] <= li < t.shape[-2]:
            raise DataError(f"{p}: layer {li} out of range for a direction of shape {tuple(t.shape)}")
        t = t[..., li, :]
        if t.ndim == 2:
            t = t[pos]
    if t.ndim != 1 or t.shape[0] != d:
        raise DataError(f"{p}: direction has shape {tuple(t.shape)}, expected [{d}] at the SAE's hook")
    if not bool(torch.isfinite(t).all()) or float(t.norm()) == 0:
        raise DataError(f"{p}: direction is zero or contains NaN/inf")
    return t


class _Stats:
    """Streaming per-latent statistics over [m, d_sae] code batches (one ``update`` per LM batch)."""

    def __init__(self, n: int, cfg: InspectConfig, device: torch.device, r_hat: Tensor | None) -> None:
        k, r = cfg.top_k, cfg.samples
        self.top_vals = torch.full((k, n), -float("inf"), device=device)
        self.top_rows = torch.full((k, n), -1, dtype=torch.long, device=device)
        self.keys = torch.full((r, n), -1.0, device=device)  # reservoir: uniform keys, -1 = empty
        self.s_vals = torch.zeros(r, n, device=device)
        self.s_rows = torch.full((r, n), -1, dtype=torch.long, device=device)
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.fires = torch.zeros(n, dtype=torch.long, device=device)
        self.max_act = torch.zeros(n, device=device)
        self.hist = torch.zeros(n * HIST_BINS, dtype=torch.long, device=device)
        self.r_hat = r_hat
        self.mom = {key: torch.zeros(n, dtype=torch.float64, device=device) for key in ("f", "f2", "fp")}
        self.p_sum = self.p2_sum = 0.0
        self.rows = 0

    def update(self, f: Tensor, x: Tensor) -> None:
        m, n = f.shape
        rows = torch.arange(self.rows, self.rows + m, device=f.device).unsqueeze(1).expand(m, n)
        vals, order = torch.cat([self.top_vals, f]).topk(self.top_vals.shape[0], dim=0)
        self.top_rows, self.top_vals = torch.cat([self.top_rows, rows]).gather(0, order), vals
        active = f > 0
        keys = torch.rand(m, n, generator=self.gen, device=f.device).masked_fill_(~active, -2.0)  # inactive: never
        self.keys, order = torch.cat([self.keys, keys]).topk(self.keys.shape[0], dim=0)
        self.s_vals = torch.cat([self.s_vals, f]).gather(0, order)
        self.s_rows = torch.cat([self.s_rows, rows]).gather(0, order)
        self.fires += active.sum(0)
        self.max_act = torch.maximum(self.max_act, f.max(0).values)
        v = f[active]
        b = ((v.log10() - HIST_LO) / (HIST_HI - HIST_LO) * HIST_BINS).long().clamp(0, HIST_BINS - 1)
        self.hist.scatter_add_(0, active.nonzero()[:, 1] * HIST_BINS + b, torch.ones_like(b))
        if self.r_hat is not None:
            proj = (x @ self.r_hat).double()  # [m]
            fd = f.double()
            self.mom["f"] += fd.sum(0)
            self.mom["f2"] += fd.pow(2).sum(0)
            self.mom["fp"] += (fd * proj.unsqueeze(1)).sum(0)
            self.p_sum += float(proj.sum())
            self.p2_sum += float(proj.pow(2).sum())
        self.rows += m

    def corr(self) -> Tensor | None:
        if self.r_hat is None:
            return None
        N = self.rows
        cov = self.mom["fp"] / N - (self.mom["f"] / N) * (self.p_sum / N)
        var_f = (self.mom["f2"] / N - (self.mom["f"] / N).pow(2)).clamp_min(0)
        var_p = max(self.p2_sum / N - (self.p_sum / N) ** 2, 0.0)
        corr = cov / (var_f.sqrt() * var_p**0.5).clamp_min(1e-30)
        return corr.masked_fill(var_f <= 0, float("nan")).float().cpu()  # undefined for a constant latent


@torch.no_grad()
def scan_latents(model: torch.nn.Module, tokenizer: Any, sae: Any, hook: Hook, texts: Iterable[str],
                 cfg: InspectConfig, direction: Tensor | None = None, progress: bool = True) -> Scan:
    """Stream ``cfg.tokens`` kept tokens through the model (early-stopped at ``hook``) and the SAE."""
    device = model_device(model)
    ctx = ContextConfig(cfg.context_size, cfg.prepend_bos, True)
    src = ActivationSource(model, tokenizer, hook, (), ctx)
    sae = sae.to(device=device, dtype=torch.float32).eval()
    r_hat = direction.to(device) / direction.norm() if direction is not None else None
    stats = _Stats(sae.cfg.d_sae, cfg, device, r_hat)
    ids_all, rctx, rpos, n_ctx = [], [], [], 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.tokens, disable=None, desc="sae inspect", unit="tok", unit_scale=True)
    for ids in iter_id_batches(texts, tokenizer, ctx, cfg.batch_contexts):
        keep = src.keep_mask(ids)
        x = run_to_hook(model, ids.to(device), hook, anatomy=src.anatomy)[keep.to(device)].float()  # [m, d]
        f = sae.encode(x)  # [m, d_sae]
        where = keep.nonzero()
        rctx.append(where[:, 0] + n_ctx)
        rpos.append(where[:, 1])
        ids_all.append(ids)
        n_ctx += ids.shape[0]
        stats.update(f, x)
        if bar is not None:
            bar.update(f.shape[0])
        if stats.rows >= cfg.tokens:
            break
    if bar is not None:
        bar.close()
    if stats.rows == 0:
        raise AlignlabError("the text produced no complete context to scan; pass more text or a smaller --context-size")
    return Scan(torch.cat(ids_all), torch.cat(rctx), torch.cat(rpos), stats.top_vals.cpu(), stats.top_rows.cpu(),
                stats.fires.cpu(), stats.max_act.cpu(), stats.hist.view(-1, HIST_BINS).cpu(), stats.s_vals.cpu(),
                stats.s_rows.cpu(), stats.corr(), stats.rows)


@torch.no_grad()
def context_acts(model: torch.nn.Module, sae: Any, hook: Hook, scan: Scan, shown: list[int],
                 batch_contexts: int = 16) -> dict[int, Tensor]:
    """Per-token activations ``[seq, len(shown)]`` of the shown latents in every context of their top-K lists
    and samples."""
    if not shown:
        return {}
    from alignlab.models.anatomy import map_model

    rows = torch.cat([scan.top_rows[:, shown].flatten(), scan.sample_rows[:, shown].flatten()])
    ctxs = sorted(set(scan.row_ctx[rows[rows >= 0]].tolist()))
    device, anat = model_device(model), map_model(model)
    sel = torch.tensor(shown, device=device)
    out: dict[int, Tensor] = {}
    for start in range(0, len(ctxs), batch_contexts):
        part = ctxs[start : start + batch_contexts]
        x = run_to_hook(model, scan.context_ids[part].to(device), hook, anatomy=anat).float()  # [b, seq, d]
        f = sae.encode(x.flatten(0, 1))[:, sel].view(len(part), x.shape[1], len(shown))  # [b, seq, L]
        out.update({c: f[j].cpu() for j, c in enumerate(part)})
    return out


@torch.no_grad()
def unembed_gain(final_norm: torch.nn.Module, d: int) -> Tensor:
    """The final norm's per-dimension gain ([d]): LayerNorm weight, or RMSNorm(1) (covers Gemma's 1+w)."""
    if isinstance(final_norm, torch.nn.LayerNorm):
        return final_norm.weight.detach().float() if final_norm.weight is not None else torch.ones(d)
    p = next(final_norm.parameters(), None)
    ones = torch.ones(1, d, device=p.device if p is not None else "cpu", dtype=p.dtype if p is not None else torch.float32)
    return final_norm(ones).reshape(d).detach().float()


@torch.no_grad()
def logit_effects(model: torch.nn.Module, sae: Any, latents: list[int], top: int = 10) -> list[dict[str, Any]]:
    """Top/bottom token ids of d_iᵀ diag(g) W_Uᵀ per latent (approximate: ignores the norm scale, later layers)."""
    from alignlab.models.anatomy import map_model

    anat = map_model(model)
    w_u = anat.unembedding.weight.detach().float()  # [vocab, d]
    gain = unembed_gain(anat.final_norm, anat.d_model).to(w_u.device)
    dec = sae.W_dec.detach().float()[latents].to(w_u.device)  # [L, d]
    eff = (dec * gain) @ w_u.T  # [L, vocab]
    top_v, top_i = eff.topk(min(top, eff.shape[1]), dim=1)
    bot_v, bot_i = (-eff).topk(min(top, eff.shape[1]), dim=1)
    return [{"top": list(zip(top_i[j].tolist(), top_v[j].tolist())), "bottom": list(zip(bot_i[j].tolist(), (-bot_v[j]).tolist()))}
            for j in range(len(latents))]


@torch.no_grad()
def direction_stats(sae: Any, r: Tensor, captured_m: tuple[int, ...] = (1, 5, 20)) -> dict[str, Any]:
    """cos(d_i, r), cos(W_enc[:, i], r) and the fraction of ||r||² in the span of the top-m decoder rows."""
    r = r.float().cpu()
    r_hat = r / r.norm()
    dec = sae.W_dec.detach().float().cpu()  # [n, d]
    enc = sae.W_enc.detach().float().cpu().T  # [n, d]
    cos_dec = (dec / dec.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ r_hat
    cos_enc = (enc / enc.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ r_hat
    order = cos_dec.abs().argsort(descending=True)
    frac = {}
    for m in captured_m:
        basis = dec[order[:m]].double().T  # [d, m]
        coef = torch.linalg.lstsq(basis, r.double().unsqueeze(1)).solution
        resid = r.double() - (basis @ coef).squeeze(1)
        frac[str(m)] = float(1 - resid.pow(2).sum() / r.double().pow(2).sum())
    return {"cos_dec": cos_dec, "cos_enc": cos_enc, "order": order, "frac_captured": frac}


def run_inspect(model: torch.nn.Module, tokenizer: Any, sae: Any, texts: Iterable[str], cfg: InspectConfig, *,
                out_html: str | Path, bundle: str | Path | None = None, layer: int | None = None,
                progress: bool = True, title: str = "SAE") -> dict[str, Any]:
    """Scan, compute logit effects and direction statistics, write the dashboard; return a summary."""
    from alignlab.models.anatomy import map_model
    from alignlab.sae.dashboard import render_dashboard, write_bundle

    hook = hook_of_sae(sae.cfg, map_model(model).n_layers, layer)
    direction = None
    if cfg.direction:
        direction = load_direction(cfg.direction, sae.cfg.d_in, hook, cfg.direction_key, cfg.direction_layer,
                                   cfg.direction_pos, cfg.force)
    scan = scan_latents(model, tokenizer, sae, hook, texts, cfg, direction, progress)
    dstats = direction_stats(sae, direction) if direction is not None else None
    if dstats is not None:
        shown = dstats["order"][: cfg.latents].tolist()
    else:
        alive = (scan.fires > 0).nonzero().flatten()
        shown = alive[scan.fires[alive].argsort(descending=True)][: cfg.latents].tolist()
    effects = logit_effects(model, sae, shown) if shown else []
    acts = context_acts(model, sae, hook, scan, shown, cfg.batch_contexts)
    html = render_dashboard(scan, shown, effects, tokenizer, cfg, dstats, acts, title=f"{title} @ {hook.address}")
    from alignlab.io import write_text_atomic

    write_text_atomic(out_html, html)
    summary: dict[str, Any] = {"n_tokens": scan.n_tokens, "shown": len(shown), "hook": hook.address,
                               "config": asdict(cfg), "frac_dead": float((scan.fires == 0).float().mean())}
    if dstats is not None:
        best = int(dstats["order"][0])
        summary.update(top_cos_latent=best, top_cos=float(dstats["cos_dec"][best]), frac_captured=dstats["frac_captured"])
    if bundle is not None:
        write_bundle(bundle, scan, dstats, summary)
    return summary
