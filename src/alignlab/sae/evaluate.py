"""SAE evaluation (spec §5): reconstruction, sparsity, shrinkage and spliced-in LM loss.

For each LM batch the model runs once clean (capturing the hooked activation x and the clean next-token
distribution), once with x zero-ablated and once per SAE with x replaced by the reconstruction x̂; the
splice and the ablation touch only the kept (non-special) positions, and the rest of the model runs
unchanged. Key names follow SAEBench "core" wherever the meaning coincides (``ce_loss_score``,
``kl_div_score``, ``explained_variance``, ``relative_reconstruction_bias`` ...); readable aliases
(``ce_loss_recovered``, ``shrinkage_gamma``, ``fvu``) are reported too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.sae.activations import ActivationSource, ContextConfig, Hook, iter_id_batches, model_device

SPEC_MIN_TOKENS = 1_048_576  # spec §5: at least 1M held-out tokens (the Gated paper used > 1M)


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate on (held-out text) and how much of it."""

    tokens: int | None = None
    """Held-out tokens to evaluate on (None: 2^20 on CUDA as spec §5 asks, 2^15 on CPU)."""
    context_size: int = 128
    """Tokens per context window."""
    batch_contexts: int = 8
    """Contexts per LM forward (memory: batch x context x vocab fp32 logits are kept)."""
    text: str | None = None
    """Text source: .txt/.jsonl/dir/hf:name (default: the offline Python corpus)."""
    split: str = "eval"
    """Document split of the text source: eval (held out from caching/training), train or all."""
    eval_frac: float = 0.05
    """Fraction of documents (by content hash) held out for evaluation."""
    seed: int = 0
    """Document order seed."""
    prepend_bos: bool | None = None
    """Start every window with BOS (None: whenever the tokenizer has one)."""
    dense_threshold: float = 0.1
    """Firing frequency above which a latent counts as dense (0.01 is reported too)."""

    def __post_init__(self) -> None:
        if self.tokens is not None and self.tokens < 1:
            raise AlignlabError(f"tokens must be >= 1, got {self.tokens}")
        if self.batch_contexts < 1:
            raise AlignlabError(f"batch_contexts must be >= 1, got {self.batch_contexts}")

    def resolved_tokens(self, device: torch.device) -> int:
        if self.tokens is not None:
            return self.tokens
        return SPEC_MIN_TOKENS if device.type == "cuda" else 32_768


class _Acc:
    """Per-SAE sums (fp64 on the device; read back once at the end)."""

    def __init__(self, d: int, n: int, device: torch.device) -> None:
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=device)  # noqa: E731
        self.vec = {k: z(d) for k in ("x", "x2", "e", "e2")}
        self.sc = {k: z(()) for k in ("l0", "l1", "sse", "xx", "hh", "xh", "cos", "l2r", "fvu_b", "ce", "kl")}
        self.fires = torch.zeros(n, dtype=torch.long, device=device)
        self.batches = 0

    @torch.no_grad()
    def add(self, x: Tensor, f: Tensor, xh: Tensor) -> None:  # x, xh [m, d]; f [m, n]
        e = x - xh
        active = f != 0
        s, v = self.sc, self.vec
        s["l0"] += active.sum(dtype=torch.float64)
        s["l1"] += f.abs().sum(dtype=torch.float64)
        self.fires += active.sum(0)
        s["sse"] += e.pow(2).sum(dtype=torch.float64)
        xn, hn = x.norm(dim=1), xh.norm(dim=1)
        s["xx"] += xn.pow(2).sum(dtype=torch.float64)
        s["hh"] += hn.pow(2).sum(dtype=torch.float64)
        s["xh"] += (x * xh).sum(dtype=torch.float64)
        s["cos"] += torch.nn.functional.cosine_similarity(x, xh, dim=1, eps=1e-12).sum(dtype=torch.float64)
        s["l2r"] += (hn / xn.clamp_min(1e-12)).sum(dtype=torch.float64)
        batch_var = (x - x.mean(0)).pow(2).sum(dtype=torch.float64)
        s["fvu_b"] += e.pow(2).sum(dtype=torch.float64) / batch_var.clamp_min(1e-30)
        v["x"] += x.sum(0, dtype=torch.float64)
        v["x2"] += x.pow(2).sum(0, dtype=torch.float64)
        v["e"] += e.sum(0, dtype=torch.float64)
        v["e2"] += e.pow(2).sum(0, dtype=torch.float64)
        self.batches += 1


def _ce(logp: Tensor, targets: Tensor, tmask: Tensor) -> Tensor:
    """Summed cross-entropy of ``targets`` [b, seq-1] under ``logp`` [b, seq-1, V] over masked positions."""
    return -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)[tmask].sum(dtype=torch.float64)


def _ce_kl(logits: Tensor, targets: Tensor, tmask: Tensor, logp_clean: Tensor) -> tuple[Tensor, Tensor]:
    """Summed CE and summed KL(p_clean || p) over the masked prediction positions."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [b, seq-1, V]
    kl = (logp_clean.exp() * (logp_clean - logp)).sum(-1)[tmask].sum(dtype=torch.float64)
    return _ce(logp, targets, tmask), kl


def _forward_logits(model: torch.nn.Module, ids: Tensor, hook: Hook, anatomy: Any, fn: Any) -> Tensor:
    from alignlab.models.hooks import hook_context

    with torch.no_grad(), hook_context(model, [(hook.point, hook.layer, fn)], anatomy):
        return model(input_ids=ids, use_cache=False).logits


@torch.no_grad()
def _eval_batch(model: torch.nn.Module, src: ActivationSource, hook: Hook, saes: Sequence[Any], accs: list[_Acc],
                ids: Tensor, keep: Tensor, lm: dict[str, Tensor], ce_sae: list[Tensor], kl_sae: list[Tensor]) -> None:
    """Clean, zero-ablated and one spliced forward per SAE on one batch ``ids`` [b, seq]; adds to the sums."""
    targets, tmask = ids[:, 1:], keep[:, 1:]
    captured: dict[str, Tensor] = {}

    def observe(x: Tensor, layer: int) -> None:
        captured["x"] = x

    logits = _forward_logits(model, ids, hook, src.anatomy, observe)
    logp_clean = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [b, seq-1, V]
    del logits
    lm["ce_clean"] += _ce(logp_clean, targets, tmask)
    x_full = captured["x"]  # [b, seq, d] in the LM dtype
    kmask = keep.unsqueeze(-1)
    zero_fn = lambda x, _l: torch.where(kmask, torch.zeros_like(x), x)  # noqa: E731
    ce, kl = _ce_kl(_forward_logits(model, ids, hook, src.anatomy, zero_fn), targets, tmask, logp_clean)
    lm["ce_zero"] += ce
    lm["kl_zero"] += kl
    xs = x_full[keep].float()  # [m, d]
    for i, sae in enumerate(saes):
        f = sae.encode(xs)  # [m, d_sae]
        xh = sae.decode(f)  # [m, d]
        accs[i].add(xs, f, xh)
        spliced = x_full.clone()
        spliced[keep] = xh.to(x_full.dtype)
        ce, kl = _ce_kl(_forward_logits(model, ids, hook, src.anatomy, lambda x, _l, s=spliced: s),
                        targets, tmask, logp_clean)
        ce_sae[i] += ce
        kl_sae[i] += kl


def evaluate_saes(model: torch.nn.Module, tokenizer: Any, saes: Sequence[Any], hook: Hook, texts: Iterable[str],
                  cfg: EvalConfig | None = None, names: Sequence[str] | None = None,
                  progress: bool = True) -> list[dict[str, Any]]:
    """Evaluate SAEs that read ``hook`` of ``model`` on ``texts``; one metrics dict per SAE (spec §5)."""
    cfg = cfg or EvalConfig()
    names = list(names) if names is not None else [f"sae_{i}" for i in range(len(saes))]
    device = model_device(model)
    n_target = cfg.resolved_tokens(device)
    ctx = ContextConfig(cfg.context_size, cfg.prepend_bos, True)
    src = ActivationSource(model, tokenizer, hook, (), ctx)  # for the anatomy, hook check and keep mask
    for sae in saes:
        if sae.cfg.d_in != src.d:
            raise AlignlabError(f"SAE width d_in={sae.cfg.d_in} does not match the model's d={src.d} at {hook.address}")
    saes = [s.to(device=device, dtype=torch.float32).eval() for s in saes]
    accs = [_Acc(src.d, s.cfg.d_sae, device) for s in saes]
    zero = torch.zeros((), dtype=torch.float64, device=device)
    lm = {"ce_clean": zero.clone(), "ce_zero": zero.clone(), "kl_zero": zero.clone()}
    ce_sae, kl_sae = [zero.clone() for _ in saes], [zero.clone() for _ in saes]
    n_tok, n_pred = 0, 0
    bar = _bar(progress, n_target)
    for ids_cpu in iter_id_batches(texts, tokenizer, ctx, cfg.batch_contexts):
        keep_cpu = src.keep_mask(ids_cpu)
        _eval_batch(model, src, hook, saes, accs, ids_cpu.to(device), keep_cpu.to(device), lm, ce_sae, kl_sae)
        rows = int(keep_cpu.sum())
        n_tok += rows
        n_pred += int(keep_cpu[:, 1:].sum())
        if bar is not None:
            bar.update(rows)
        if n_tok >= n_target:
            break
    if bar is not None:
        bar.close()
    if n_tok == 0:
        raise AlignlabError("the evaluation text produced no complete context; pass more text or a smaller --context-size")
    shared = {k: float(v) / max(n_pred, 1) for k, v in lm.items()}
    return [_finish(name, acc, float(c) / max(n_pred, 1), float(k) / max(n_pred, 1), shared, n_tok, hook, cfg)
            for name, acc, c, k in zip(names, accs, ce_sae, kl_sae)]


def _finish(name: str, acc: _Acc, ce_sae: float, kl_sae: float, lm: dict[str, float], n: int, hook: Hook,
            cfg: EvalConfig) -> dict[str, Any]:
    s = {k: float(v) for k, v in acc.sc.items()}
    v = acc.vec
    mu = v["x"] / n
    total_var = float((v["x2"] / n - mu.pow(2)).sum())  # E||x - mu||^2, mu over the eval set
    resid_var = float((v["e2"] / n - (v["e"] / n).pow(2)).sum())
    mse = s["sse"] / n
    freq = acc.fires.double() / n
    ce_clean, ce_zero = lm["ce_clean"], lm["ce_zero"]
    kl_zero = lm["kl_zero"]
    ce_score = (ce_zero - ce_sae) / (ce_zero - ce_clean) if ce_zero != ce_clean else float("nan")
    gamma = s["hh"] / s["xh"] if s["xh"] != 0 else float("nan")  # arXiv 2404.16014 §4.2: argmin E||x̂/γ - x||²
    fvu = mse / total_var if total_var > 0 else float("nan")
    out = {
        "sae": name, "hook": hook.address, "n_tokens": n, "l0": s["l0"] / n, "l1": s["l1"] / n,
        "mse": mse, "mse_per_dim": mse / v["x"].numel(), "fvu": fvu, "explained_variance": 1 - fvu,
        "fvu_batch": s["fvu_b"] / max(acc.batches, 1), "explained_variance_legacy": 1 - s["fvu_b"] / max(acc.batches, 1),
        "fvu_residual_var": resid_var / total_var if total_var > 0 else float("nan"),
        "cossim": s["cos"] / n, "l2_ratio": s["l2r"] / n, "l2_norm_in": math.sqrt(s["xx"] / n),
        "l2_norm_out": math.sqrt(s["hh"] / n), "shrinkage_gamma": gamma, "relative_reconstruction_bias": gamma,
        "ce_loss_without_sae": ce_clean, "ce_loss_with_ablation": ce_zero, "ce_loss_with_sae": ce_sae,
        "ce_loss_score": ce_score, "ce_loss_recovered": ce_score, "delta_lm_loss": ce_sae - ce_clean,
        "kl_div_with_sae": kl_sae, "kl_div_with_ablation": kl_zero,
        "kl_div_score": (kl_zero - kl_sae) / kl_zero if kl_zero > 0 else float("nan"),
        "frac_dead": float((acc.fires == 0).double().mean()),
        "frac_dense": float((freq > cfg.dense_threshold).double().mean()),
        "freq_over_10_percent": float((freq > 0.1).double().mean()),
        "freq_over_1_percent": float((freq > 0.01).double().mean()),
        "d_sae": int(acc.fires.numel()),
    }
    out["log10_feature_density"] = torch.log10(freq.float().cpu() + 1e-10)  # [d_sae]; popped before JSON
    return out


def _bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=None, desc="sae eval", unit="tok", unit_scale=True)


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("sae", "SAE", "{}"), ("l0", "L0", "{:.1f}"), ("fvu", "FVU", "{:.4f}"), ("mse", "MSE", "{:.4g}"),
    ("ce_loss_score", "CE rec.", "{:.4f}"), ("delta_lm_loss", "ΔLM", "{:.4f}"),
    ("kl_div_with_sae", "KL", "{:.4f}"), ("shrinkage_gamma", "γ", "{:.3f}"),
    ("frac_dead", "dead", "{:.3f}"), ("frac_dense", "dense", "{:.3f}"),
)


def json_ready(result: dict[str, Any]) -> dict[str, Any]:
    """The metrics without tensors; NaN becomes None so the JSON is standard."""
    out = {}
    for k, v in result.items():
        if isinstance(v, Tensor):
            continue
        out[k] = None if isinstance(v, float) and not math.isfinite(v) else v
    return out


def format_table(results: Sequence[dict[str, Any]], fmt: str = "text") -> str:
    """One comparison table of several SAEs: ``text`` (aligned columns) or ``markdown``."""
    if fmt not in ("text", "markdown"):
        raise AlignlabError(f"table format must be text or markdown, got {fmt!r}")
    head = [h for _k, h, _f in TABLE_COLUMNS]
    rows = [[(f.format(r[k]) if r.get(k) is not None else "-") for k, _h, f in TABLE_COLUMNS] for r in results]
    if fmt == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt_row = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt_row(head)] + [fmt_row(r) for r in rows])
