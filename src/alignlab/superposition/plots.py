"""Plots of spec §7. Each function returns PNG bytes (150 dpi); callers write them atomically."""

from __future__ import annotations

import io

import numpy as np

from alignlab.superposition.metrics import NAMED_FRACTIONS

DPI = 150
PHASE_COLOURS = {"feature 2 dropped": "#4c72b0", "feature 1 dropped": "#dd8452", "none": "#cccccc",
                 "superposition": "#55a868"}


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(*args, **kwargs)


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    # Fixed metadata so a rerun writes identical bytes.
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def plot_geometry_2d(levels: list, W: np.ndarray, importance: list[float]) -> bytes:
    """One panel per sparsity level: unit circle and an arrow per W_i coloured by importance. W [L, n, 2]."""
    k = len(levels)
    cols = min(k, 5)
    rows = (k + cols - 1) // cols
    plt, fig, axes = _figure(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    cmap = plt.get_cmap("viridis")
    imp = np.asarray(importance, dtype=float)
    span = max(float(imp.max() - imp.min()), 1e-12)
    for k, (ax, lv) in enumerate(zip(axes.flat, levels)):
        geo = lv.geometry
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, lw=0.6, color="0.6"))
        for i, w in enumerate(np.asarray(W[k])):
            ax.arrow(0, 0, w[0], w[1], width=0.02, length_includes_head=True, color=cmap((imp[i] - imp.min()) / span))
        ax.set_xlim(-1.5, 1.5)
        ax.set_ylim(-1.5, 1.5)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        norms = ",".join(f"{v:.2f}" for v in geo.norms)
        biases = ",".join(f"{v:.2f}" for v in geo.biases)
        ax.set_title(f"1-S={lv.feature_prob:.3f} D*={lv.d_star:.2f}\n{lv.arrangement}", fontsize=8)
        ax.text(0, -1.45, f"|W|={norms}\nb={biases}", fontsize=5, ha="center", va="bottom")
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.suptitle("5 features in 2 dimensions (arrow colour = importance)", fontsize=10)
    return _png(plt, fig)


def plot_norms_interference(feature_probs: list[float], norms: np.ndarray, phi: np.ndarray) -> bytes:
    """Per level: horizontal bars of ||W_i|| coloured by phi_i on a 0-1 scale. norms, phi [L, n]."""
    from matplotlib.collections import PolyCollection

    L, n = norms.shape
    plt, fig, axes = _figure(1, L, figsize=(1.4 * L + 1, max(2.5, 0.05 * n + 1.5)), sharey=True, squeeze=False)
    cmap = plt.get_cmap("coolwarm")
    for k, ax in enumerate(axes[0]):
        # One PolyCollection instead of n bar patches: barh is very slow for hundreds of features.
        boxes = [[(0, i - 0.45), (w, i - 0.45), (w, i + 0.45), (0, i + 0.45)] for i, w in enumerate(norms[k])]
        ax.add_collection(PolyCollection(boxes, facecolors=cmap(np.clip(phi[k], 0, 1)), edgecolors="none"))
        ax.set_ylim(n - 0.5, -0.5)
        ax.set_title(f"{feature_probs[k]:.3f}", fontsize=7)
        ax.set_xlim(0, max(1.3, float(norms.max()) * 1.05))
        ax.tick_params(labelsize=6)
    axes[0][0].set_ylabel("feature i")
    fig.supxlabel("||W_i|| per 1-S level (colour: interference phi_i, blue 0 -> red 1)", fontsize=8)
    return _png(plt, fig)


def plot_phase_diagram(cells: list) -> bytes:
    """x = 1-S (log), y = r (log), cells coloured by class, antipodal cells hatched."""
    from matplotlib.patches import Patch, Rectangle

    plt, fig, ax = _figure(figsize=(6, 5))
    probs = sorted({c.feature_prob for c in cells})
    ratios = sorted({c.ratio for c in cells})
    lp, lr = np.log10(probs), np.log10(ratios)
    dp = (lp[-1] - lp[0]) / max(len(lp) - 1, 1)
    dr = (lr[-1] - lr[0]) / max(len(lr) - 1, 1)
    for c in cells:
        x, y = np.log10(c.feature_prob) - dp / 2, np.log10(c.ratio) - dr / 2
        hatch = "//" if c.phase == "superposition" and c.dot < 0 else None
        ax.add_patch(Rectangle((x, y), dp, dr, facecolor=PHASE_COLOURS[c.phase], hatch=hatch, edgecolor="white"))
    ax.set_xlim(lp[0] - dp / 2, lp[-1] + dp / 2)
    ax.set_ylim(lr[0] - dr / 2, lr[-1] + dr / 2)
    ax.set_xlabel("log10 feature probability 1-S")
    ax.set_ylabel("log10 importance ratio r = I_2 / I_1")
    handles = [Patch(facecolor=col, label=name) for name, col in PHASE_COLOURS.items()]
    handles.append(Patch(facecolor="white", edgecolor="k", hatch="//", label="antipodal (W_1.W_2 < 0)"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title("2 features in 1 dimension")
    return _png(plt, fig)


def plot_dimensionality(levels: list, seed: int = 0) -> bytes:
    """Jittered D_i against 1/(1-S) (log x), D* curve, dashed guides at the named fractions, lines marked."""
    plt, fig, ax = _figure(figsize=(7, 4.5))
    rng = np.random.default_rng(seed)
    xs = np.array([lv.inv_density for lv in levels])
    for lv in levels:
        D = np.asarray(lv.dims)
        jitter = np.exp(rng.uniform(-0.03, 0.03, size=D.shape))
        ax.scatter(lv.inv_density * jitter, D, s=3, alpha=0.4, color="C0", linewidths=0)
        for name, t in lv.lines.items():
            if t.present:
                ax.plot(lv.inv_density, NAMED_FRACTIONS[name], marker="s", mfc="none", mec="C3", ms=9)
    ax.plot(xs, [lv.d_star for lv in levels], color="k", lw=1.2, label="D* = m / ||W||_F^2")
    for name, f in NAMED_FRACTIONS.items():
        ax.axhline(f, ls="--", lw=0.6, color="0.5")
        ax.text(xs.max() * 1.05, f, name, fontsize=7, va="center")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.1)
    ax.set_xlabel("1 / (1 - S)")
    ax.set_ylabel("feature dimensionality D_i")
    ax.set_title("dimensionality (red squares: line test passes)")
    ax.legend(fontsize=7, loc="upper right")
    return _png(plt, fig)


def plot_response(report) -> bytes:
    """Heatmap of R (neurons x concepts) with the guard metrics in the title."""
    plt, fig, ax = _figure(figsize=(max(4.0, 0.55 * len(report.concepts) + 2), 0.5 * report.R.shape[0] + 2.2))
    lim = float(np.abs(report.R).max()) or 1.0
    im = ax.imshow(report.R, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for j, k in zip(*np.nonzero(report.active)):
        ax.text(k, j, "*", ha="center", va="center", fontsize=10)
    ax.set_xticks(range(len(report.concepts)))
    ax.set_xticklabels(report.concepts, rotation=60, ha="right", fontsize=6)
    ax.set_yticks(range(report.R.shape[0]))
    ax.set_yticklabels([f"n{j} ({c})" for j, c in enumerate(report.concepts_per_neuron)], fontsize=7)
    g = report.guard
    cos = "n/a" if g.max_abs_cos is None else f"{g.max_abs_cos:.1e}"
    ax.set_title(f"{report.name}: poly_frac={report.poly_frac:.2f}, features={g.n_features} <= neurons="
                 f"{g.n_neurons}? {g.n_features <= g.n_neurons}\nmax|cos|={cos}, decode err={g.decode_error:.1e}, "
                 f"guard holds={g.holds}  (* = active)", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return _png(plt, fig)
