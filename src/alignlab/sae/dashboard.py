"""Self-contained HTML dashboard and the safetensors + JSON bundle of an inspection scan (spec §7).

Everything is inlined (CSS, the index script, PNG plots as base64 data URIs, SVG charts), so the page makes
no network request and opens offline. Sections:

- an index of *all* latents (density, max activation and, with a direction, cos(d_i, r), cos(enc_i, r) and
  corr(f_i, x·r̂)), sortable by any column and paged in the browser;
- per detailed latent: its activation histogram, its logit effects as a bar chart, its top-activating
  contexts and contexts sampled uniformly from its activating tokens, grouped by activation quantile band.

Tokens are rendered newline-safe: whitespace and control characters become visible symbols (↵ for a
newline), so a context stays on one line and a token never breaks the layout.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import torch

from alignlab.io import save_tensors_atomic, write_json_atomic
from alignlab.sae.dashboard_assets import CSS, INDEX_JS

VISIBLE = {"\n": "↵", "\r": "␍", "\t": "⇥"}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def density_plot(fires: torch.Tensor, n_tokens: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.2))
    dens = torch.log10(fires.double() / max(n_tokens, 1) + 1e-10)
    ax.hist(dens.numpy(), bins=50, range=(-10, 0), color="#4a7")
    ax.set_xlabel("log10 firing frequency (dead latents at -10)")
    ax.set_ylabel("latents")
    return _png(fig)


def latent_hist(counts: torch.Tensor, lo: float, hi: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 1.6))
    edges = torch.linspace(lo, hi, counts.numel() + 1)
    ax.bar(edges[:-1].numpy(), counts.numpy(), width=(hi - lo) / counts.numel(), align="edge", color="#c64")
    ax.set_xlabel("log10 activation")
    ax.tick_params(labelsize=7)
    return _png(fig)


def visible_token(text: str) -> str:
    """HTML for one token with its newlines, tabs and other control characters shown as symbols."""
    out = []
    for ch in text:
        if ch in VISIBLE:
            out.append(f'<span class="ws">{VISIBLE[ch]}</span>')
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f'<span class="ws">{chr(0x2400 + ord(ch)) if ord(ch) < 32 else "␡"}</span>')
        else:
            out.append(html.escape(ch))
    return "".join(out)


def _plain(text: str) -> str:
    """A token as plain text for SVG labels and titles (same substitutions, no markup)."""
    return "".join(VISIBLE.get(ch, chr(0x2400 + ord(ch)) if ord(ch) < 32 else ch) for ch in text)


class _Tok:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, i: int) -> str:
        if i not in self.cache:
            self.cache[i] = self.tokenizer.decode([i])
        return self.cache[i]


def _context_html(scan: Any, latent: int, col: int, row: int, val: float, window: int, tok: _Tok,
                  acts: dict[int, Any]) -> str:
    """One context: ±window tokens around token row ``row``, each shaded by this latent's activation there."""
    c, p = int(scan.row_ctx[row]), int(scan.row_pos[row])
    ids = scan.context_ids[c].tolist()
    per_tok = acts.get(c)
    lo, hi = max(0, p - window), min(len(ids), p + window + 1)
    peak = max(float(scan.max_act[latent]), 1e-12)
    parts = []
    for q in range(lo, hi):
        a = float(per_tok[q, col]) if per_tok is not None else (val if q == p else 0.0)
        alpha = min(max(a, 0.0) / peak, 1.0)
        text = visible_token(tok(ids[q]))
        text = f"<b>{text}</b>" if q == p else text
        parts.append(f'<span class="tok" style="background:rgba(255,120,0,{alpha:.2f})" title="{a:.3f}">{text}</span>')
    return f'<div class="ctx"><span class="muted">{val:8.3f}</span>  {"".join(parts)}</div>'


def logit_chart(effects: dict[str, Any], tok: _Tok) -> str:
    """Inline SVG: bars for the top promoted (green) and suppressed (red) tokens of one latent."""
    rows = [(t, v) for t, v in effects["top"]] + [(t, v) for t, v in effects["bottom"]]
    scale = max((abs(v) for _, v in rows), default=1.0) or 1.0
    h, bar_w, label_w = 15, 180, 110
    half = len(effects["top"])
    parts = [f'<svg width="{2 * (label_w + bar_w + 60)}" '
             f'height="{h * max(half, len(rows) - half) + 22}" role="img" aria-label="logit effects">',
             f'<text x="0" y="12" font-size="11">promotes</text>'
             f'<text x="{label_w + bar_w + 60}" y="12" font-size="11">suppresses</text>']
    for j, (t, v) in enumerate(rows):
        x0 = 0 if j < half else label_w + bar_w + 60
        y = 18 + h * (j if j < half else j - half)
        w = max(1.0, bar_w * abs(v) / scale)
        color = "#3a3" if v >= 0 else "#c33"
        parts.append(f'<text x="{x0 + label_w - 4}" y="{y + 11}" font-size="11" text-anchor="end" '
                     f'font-family="monospace">{html.escape(_plain(tok(t)).replace(" ", "␣")[:16])}</text>'
                     f'<rect x="{x0 + label_w}" y="{y + 2}" width="{w:.1f}" height="{h - 4}" fill="{color}"/>'
                     f'<text x="{x0 + label_w + w + 3:.1f}" y="{y + 11}" font-size="10">{v:+.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def quantile_samples(scan: Any, latent: int, bands: int, per_band: int) -> list[tuple[str, list[tuple[int, float]]]]:
    """(label, [(row, activation)]) per quantile band of the latent's sampled activating tokens."""
    vals, rows = scan.sample_vals[:, latent], scan.sample_rows[:, latent]
    keep = (vals > 0) & (rows >= 0)
    vals, rows = vals[keep], rows[keep]
    order = vals.argsort()
    vals, rows = vals[order], rows[order]
    n = vals.numel()
    out = []
    for b in range(bands):
        lo, hi = n * b // bands, n * (b + 1) // bands
        if hi <= lo:
            continue
        picks = sorted({lo + (hi - lo - 1) * j // max(per_band - 1, 1) for j in range(min(per_band, hi - lo))})
        label = (f"quantile {100 * b // bands}–{100 * (b + 1) // bands}% of activating tokens "
                 f"(activation {float(vals[lo]):.3f}–{float(vals[hi - 1]):.3f}, {hi - lo} sampled)")
        out.append((label, [(int(rows[i]), float(vals[i])) for i in picks]))
    return out


def _index_data(scan: Any, shown: list[int], dstats: dict[str, Any] | None) -> str:
    """The JSON the index script reads: 4 significant digits per value, NaN as null, '</' escaped."""
    def col(t: torch.Tensor) -> list[float | None]:
        return [None if not math.isfinite(v) else float(f"{v:.4g}") for v in t.double().tolist()]

    data: dict[str, Any] = {"density": col(scan.fires.double() / max(scan.n_tokens, 1)), "max_act": col(scan.max_act),
                            "detail": list(shown), "cos_dec": None}
    if dstats:
        data.update(cos_dec=col(dstats["cos_dec"]), cos_enc=col(dstats["cos_enc"]),
                    corr=col(scan.corr) if scan.corr is not None else [None] * scan.fires.numel())
    return json.dumps(data, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")


def _latent_section(scan: Any, i: int, col: int, eff: dict[str, Any], tok: _Tok, cfg: Any, acts: dict[int, Any],
                    freq: torch.Tensor) -> list[str]:
    from alignlab.sae.inspect import HIST_HI, HIST_LO

    out = [f"<div class='lat' id='l{i}'><h3>Latent {i}</h3>",
           f"<p>density {freq[i]:.2e}, max activation {scan.max_act[i]:.3f}</p>",
           f"<img alt='activation histogram' src='{latent_hist(scan.hist[i].double(), HIST_LO, HIST_HI)}'>",
           "<p><b>Logit effects</b> (approximate, d_iᵀ·diag(g)·W_Uᵀ)</p>", logit_chart(eff, tok),
           "<p><b>Top-activating contexts</b></p>"]
    for j in range(scan.top_vals.shape[0]):
        row, val = int(scan.top_rows[j, i]), float(scan.top_vals[j, i])
        if row >= 0 and val > 0:
            out.append(_context_html(scan, i, col, row, val, cfg.window, tok, acts))
    bands = quantile_samples(scan, i, cfg.bands, max(1, math.ceil(cfg.samples / cfg.bands / 2)))
    if bands:
        out.append("<p><b>Sampled activating contexts</b>, by quantile band</p>")
    for label, picks in reversed(bands):
        out.append(f"<div class='band muted'>{html.escape(label)}</div>")
        out += [_context_html(scan, i, col, row, val, cfg.window, tok, acts) for row, val in picks]
    out.append("</div>")
    return out


def render_dashboard(scan: Any, shown: list[int], effects: list[dict[str, Any]], tokenizer: Any, cfg: Any,
                     dstats: dict[str, Any] | None, acts: dict[int, Any] | None = None, title: str = "SAE") -> str:
    from alignlab.sae.inspect import HIST_BINS, HIST_HI, HIST_LO

    tok = _Tok(tokenizer)
    n = scan.fires.numel()
    freq = scan.fires.double() / max(scan.n_tokens, 1)
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
           f"<p>{scan.n_tokens} tokens scanned; {n} latents; dead {float((scan.fires == 0).double().mean()):.3f}; "
           f"dense (&gt;10%) {float((freq > 0.1).double().mean()):.3f}.</p>",
           f"<img alt='density histogram' src='{density_plot(scan.fires, scan.n_tokens)}'>"]
    if dstats:
        fc = ", ".join(f"top-{m}: {v:.3f}" for m, v in dstats["frac_captured"].items())
        out.append(f"<p>Direction similarity: fraction of ||r||² captured by the top-m decoder directions ({fc}).</p>")
    out += ["<h2>All latents</h2><p class='pager'><button id='prev'>&larr; prev</button><button id='next'>next "
            "&rarr;</button> go to latent <input id='goto' type='number' min='0' style='width:7em'> "
            "<span id='pageinfo' class='muted'></span></p>",
            "<table id='idx'><thead><tr></tr></thead><tbody></tbody></table>",
            f"<script type='application/json' id='latent-data'>{_index_data(scan, shown, dstats)}</script>",
            f"<script>{INDEX_JS}</script>", f"<h2>{len(shown)} latents in detail</h2>"]
    acts = acts or {}
    for col, (i, eff) in enumerate(zip(shown, effects)):
        out += _latent_section(scan, i, col, eff, tok, cfg, acts, freq)
    out.append(f"<p class='muted'>histogram bins: {HIST_BINS} over log10 activation [{HIST_LO}, {HIST_HI}]</p></body></html>")
    return "\n".join(out)


def write_bundle(directory: str | Path, scan: Any, dstats: dict[str, Any] | None, summary: dict[str, Any]) -> None:
    """The scan as ``inspect.safetensors`` + ``inspect.json`` in ``directory``."""
    d = Path(directory)
    tensors = {"context_ids": scan.context_ids, "row_ctx": scan.row_ctx, "row_pos": scan.row_pos,
               "top_vals": scan.top_vals, "top_rows": scan.top_rows, "fires": scan.fires, "max_act": scan.max_act,
               "hist": scan.hist, "sample_vals": scan.sample_vals, "sample_rows": scan.sample_rows}
    if scan.corr is not None:
        tensors["corr"] = scan.corr
    if dstats is not None:
        tensors["cos_dec"], tensors["cos_enc"] = dstats["cos_dec"], dstats["cos_enc"]
    save_tensors_atomic(d / "inspect.safetensors", tensors)
    write_json_atomic(d / "inspect.json", summary)
