"""Self-contained HTML dashboard and the safetensors + JSON bundle of an inspection scan (spec §7).

Everything is inlined (CSS, a few lines of sorting JavaScript, PNG plots as base64 data URIs), so the page
makes no network request and opens offline.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import torch

from alignlab.io import save_tensors_atomic, write_json_atomic

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:72em}table{border-collapse:collapse}
td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}th{cursor:pointer;background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.ctx{font-family:monospace;white-space:pre-wrap;margin:2px 0}
.tok{border-radius:2px}.lat{border-top:2px solid #888;margin-top:1.5em}.muted{color:#777}"""
SORT_JS = """function sortBy(t,c){const b=t.tBodies[0],r=[...b.rows],d=t.dataset.d==c?-1:1;t.dataset.d=d==1?c:'';
r.sort((x,y)=>{const a=parseFloat(x.cells[c].dataset.v),z=parseFloat(y.cells[c].dataset.v);return d*(a-z)});
r.forEach(e=>b.appendChild(e))}"""


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


class _Tok:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, i: int) -> str:
        if i not in self.cache:
            self.cache[i] = self.tokenizer.decode([i])
        return self.cache[i]


def _context_html(scan: Any, latent: int, col: int, j: int, window: int, tok: _Tok, acts: dict[int, Any]) -> str:
    """One top context: ±window tokens, each shaded by this latent's activation there (peak in bold)."""
    row = int(scan.top_rows[j, latent])
    val = float(scan.top_vals[j, latent])
    if row < 0 or val <= 0:
        return ""
    c, p = int(scan.row_ctx[row]), int(scan.row_pos[row])
    ids = scan.context_ids[c].tolist()
    per_tok = acts.get(c)
    lo, hi = max(0, p - window), min(len(ids), p + window + 1)
    peak = max(float(scan.max_act[latent]), 1e-12)
    parts = []
    for q in range(lo, hi):
        a = float(per_tok[q, col]) if per_tok is not None else (val if q == p else 0.0)
        alpha = min(max(a, 0.0) / peak, 1.0)
        text = html.escape(tok(ids[q]))
        text = f"<b>{text}</b>" if q == p else text
        parts.append(f'<span class="tok" style="background:rgba(255,120,0,{alpha:.2f})" title="{a:.3f}">{text}</span>')
    return f'<div class="ctx"><span class="muted">{val:8.3f}</span>  {"".join(parts)}</div>'


def render_dashboard(scan: Any, shown: list[int], effects: list[dict[str, Any]], tokenizer: Any, cfg: Any,
                     dstats: dict[str, Any] | None, acts: dict[int, Any] | None = None, title: str = "SAE") -> str:
    from alignlab.sae.inspect import HIST_BINS, HIST_HI, HIST_LO

    tok = _Tok(tokenizer)
    n = scan.fires.numel()
    freq = scan.fires.double() / max(scan.n_tokens, 1)
    head = ["latent", "density", "max act"] + (["cos(d_i, r)", "cos(enc_i, r)", "corr(f_i, x·r̂)"] if dstats else [])
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{CSS}</style><script>{SORT_JS}</script></head><body>",
           f"<h1>{html.escape(title)}</h1>",
           f"<p>{scan.n_tokens} tokens scanned; {n} latents; dead {float((scan.fires == 0).double().mean()):.3f}; "
           f"dense (&gt;10%) {float((freq > 0.1).double().mean()):.3f}.</p>",
           f"<img alt='density histogram' src='{density_plot(scan.fires, scan.n_tokens)}'>"]
    if dstats:
        fc = ", ".join(f"top-{m}: {v:.3f}" for m, v in dstats["frac_captured"].items())
        out.append(f"<p>Direction similarity: fraction of ||r||² captured by the top-m decoder directions ({fc}).</p>")
    out.append("<h2>Latents</h2><table id='idx' data-d=''><thead><tr>"
               + "".join(f"<th onclick='sortBy(this.closest(\"table\"),{i})'>{h}</th>" for i, h in enumerate(head))
               + "</tr></thead><tbody>")
    for i in shown:
        cells = [(f"<a href='#l{i}'>{i}</a>", i), (f"{freq[i]:.2e}", float(freq[i])), (f"{scan.max_act[i]:.3f}", float(scan.max_act[i]))]
        if dstats:
            corr = float(scan.corr[i]) if scan.corr is not None else float("nan")
            cells += [(f"{dstats['cos_dec'][i]:.3f}", float(dstats["cos_dec"][i])),
                      (f"{dstats['cos_enc'][i]:.3f}", float(dstats["cos_enc"][i])), (f"{corr:.3f}", corr)]
        out.append("<tr>" + "".join(f"<td data-v='{v}'>{c}</td>" for c, v in cells) + "</tr>")
    out.append("</tbody></table>")
    acts = acts or {}
    for col, (i, eff) in enumerate(zip(shown, effects)):
        out.append(f"<div class='lat' id='l{i}'><h3>Latent {i}</h3>")
        out.append(f"<p>density {freq[i]:.2e}, max activation {scan.max_act[i]:.3f}</p>")
        out.append(f"<img alt='activation histogram' src='{latent_hist(scan.hist[i].double(), HIST_LO, HIST_HI)}'>")
        pos = ", ".join(f"{html.escape(repr(tok(t)))} {v:+.2f}" for t, v in eff["top"])
        neg = ", ".join(f"{html.escape(repr(tok(t)))} {v:+.2f}" for t, v in eff["bottom"])
        out.append(f"<p><b>Logit effects</b> (approximate, d_iᵀ·diag(g)·W_Uᵀ): promotes {pos}<br>suppresses {neg}</p>")
        out.append("<p><b>Top-activating contexts</b></p>")
        out += [_context_html(scan, i, col, j, cfg.window, tok, acts) for j in range(scan.top_vals.shape[0])]
        out.append("</div>")
    out.append(f"<p class='muted'>histogram bins: {HIST_BINS} over log10 activation [{HIST_LO}, {HIST_HI}]</p></body></html>")
    return "\n".join(out)


def write_bundle(directory: str | Path, scan: Any, dstats: dict[str, Any] | None, summary: dict[str, Any]) -> None:
    """The scan as ``inspect.safetensors`` + ``inspect.json`` in ``directory``."""
    d = Path(directory)
    tensors = {"context_ids": scan.context_ids, "row_ctx": scan.row_ctx, "row_pos": scan.row_pos,
               "top_vals": scan.top_vals, "top_rows": scan.top_rows, "fires": scan.fires, "max_act": scan.max_act,
               "hist": scan.hist}
    if scan.corr is not None:
        tensors["corr"] = scan.corr
    if dstats is not None:
        tensors["cos_dec"], tensors["cos_enc"] = dstats["cos_dec"], dstats["cos_enc"]
    save_tensors_atomic(d / "inspect.safetensors", tensors)
    write_json_atomic(d / "inspect.json", summary)
