"""The question -> measured answer table of the study, computed from the measured points only.

A point is one SAE: ``{"name", "arch", "lr", "expansion", "l0", "fvu", "ce", "dead_frac", "dense_frac",
"shrinkage_gamma"}``. Architectures are compared at a matched L0: each curve's metric is interpolated linearly
in log L0 between its two neighbouring points (``value_at``). A difference counts only when it exceeds
``REL_TOL`` relative FVU (short CPU runs are noisy; the rule is written into study.json with every answer).
"""

from __future__ import annotations

import math
from typing import Any

REL_TOL = 0.05
"""Relative FVU difference at matched L0 below which two SAEs count as equal."""
GAMMA_TOL = 0.05
"""Shrinkage counts as resolved when the shrinkage factor gamma (arXiv 2404.16014 §4.2) is within this of 1."""
EXPLODE_RATIO = 10.0
"""An L_p run 'explodes' when it has a non-finite step or its largest pre-clip gradient norm exceeds the
p = 1 run's by this factor (both runs see the same batches from the same initialisation)."""


def value_at(points: list[dict[str, Any]], l0: float, key: str = "fvu") -> tuple[float | None, str]:
    """``key`` of a curve at ``l0``: interpolated in log L0 inside the curve's range, else its nearest point."""
    pts = sorted((p for p in points if p.get(key) is not None and p.get("l0", 0) > 0), key=lambda p: p["l0"])
    if not pts:
        return None, "no points"
    if l0 <= pts[0]["l0"] or l0 >= pts[-1]["l0"]:
        near = min(pts, key=lambda p: abs(math.log(p["l0"]) - math.log(l0)))
        exact = math.isclose(near["l0"], l0, rel_tol=1e-9)
        return float(near[key]), "interpolated" if exact else f"nearest point (L0 {near['l0']:.1f})"
    for lo, hi in zip(pts, pts[1:]):
        if lo["l0"] <= l0 <= hi["l0"]:
            t = (math.log(l0) - math.log(lo["l0"])) / max(math.log(hi["l0"]) - math.log(lo["l0"]), 1e-12)
            return float(lo[key] + t * (hi[key] - lo[key])), "interpolated"
    return None, "no points"


def common_l0(*curves: list[dict[str, Any]]) -> float | None:
    """Geometric middle of the L0 range every curve covers (None when the ranges do not overlap)."""
    spans = [(min(p["l0"] for p in c), max(p["l0"] for p in c)) for c in curves if c]
    if len(spans) != len(curves) or not spans:
        return None
    lo, hi = max(s[0] for s in spans), min(s[1] for s in spans)
    if lo <= 0 or lo > hi:
        return None
    return math.sqrt(lo * hi)


def reference_l0(*curves: list[dict[str, Any]]) -> float:
    """``common_l0`` when it exists, else the geometric mean of all points' L0 (values then come from nearest points)."""
    c = common_l0(*curves)
    if c is not None:
        return c
    l0s = [p["l0"] for cur in curves for p in cur if p.get("l0", 0) > 0]
    return math.exp(sum(math.log(v) for v in l0s) / len(l0s)) if l0s else 1.0


def compare(
    curves: dict[str, list[dict[str, Any]]], key: str = "fvu", l0: float | None = None
) -> dict[str, Any]:
    """Each curve's ``key`` at one matched L0 (the common one unless given)."""
    at = l0 if l0 is not None else reference_l0(*curves.values())
    values = {}
    for label, pts in curves.items():
        v, how = value_at(pts, at, key)
        values[label] = {"value": v, "how": how}
    return {"l0": at, "key": key, "values": values}


def rel_diff(a: float | None, b: float | None) -> float | None:
    """(b - a) / a, or None."""
    if a is None or b is None or a == 0:
        return None
    return (b - a) / abs(a)


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def verdict(rel: float | None, change: str, yes_if: str) -> str:
    """Plain-language reading of the relative FVU change ``rel`` that ``change`` causes; the answer is "yes" when
    the change makes FVU ``yes_if`` ("worse" or "better") by more than REL_TOL."""
    if rel is None:
        return "not measurable (no matched-L0 comparison)"
    if abs(rel) <= REL_TOL:
        return f"no measurable difference: {change} changes FVU by {100 * rel:+.1f}% (within {100 * REL_TOL:.0f}%)"
    worse = rel > 0
    word = "yes" if worse == (yes_if == "worse") else "no"
    return f"{word}: {change} {'raises' if worse else 'lowers'} FVU by {100 * abs(rel):.1f}% at matched L0"


def both_metrics(curves: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    fvu = compare(curves, "fvu")
    ce = (
        compare(curves, "ce", fvu["l0"])
        if any(p.get("ce") is not None for c in curves.values() for p in c)
        else None
    )
    return {"fvu": fvu, "ce": ce}


def ablation_answer(
    frontiers: dict[str, list[dict[str, Any]]], variant: str, change: str, yes_if: str, base: str = "gated"
) -> dict[str, Any]:
    """``variant``'s frontier against ``base``'s at a matched L0 (FVU, and CE recovered when measured)."""
    curves = {base: frontiers.get(base, []), variant: frontiers.get(variant, [])}
    m = both_metrics(curves)
    b, v = m["fvu"]["values"][base]["value"], m["fvu"]["values"][variant]["value"]
    rel = rel_diff(b, v)
    text = (
        f"{verdict(rel, change, yes_if)} (L0 {m['fvu']['l0']:.1f}: {base} FVU {_fmt(b)}, "
        f"{variant} {_fmt(v)}{_ce_text(m, base, variant)}; {_ranges(curves, m['fvu'])})"
    )
    return {"compared": list(curves), "matched": m, "rel_fvu_change": rel, "answer": text}


def _ranges(curves: dict[str, list[dict[str, Any]]], matched: dict[str, Any]) -> str:
    """Each curve's L0 span, marking curves whose value at the matched L0 is a nearest point, not interpolated."""
    parts = []
    for label, pts in curves.items():
        l0s = [p["l0"] for p in pts if p.get("l0", 0) > 0]
        if not l0s:
            continue
        how = matched["values"][label]["how"]
        parts.append(
            f"{label} L0 {min(l0s):.1f}-{max(l0s):.1f}" + ("" if how == "interpolated" else f", {how}")
        )
    return "; ".join(parts)


def _ce_text(m: dict[str, Any], a: str, b: str) -> str:
    if not m.get("ce"):
        return ""
    va, vb = m["ce"]["values"][a]["value"], m["ce"]["values"][b]["value"]
    return f"; CE recovered {_fmt(va, '.3f')} vs {_fmt(vb, '.3f')}"


def lr_answer(
    best_lr: dict[str, float],
    default: dict[str, list[dict[str, Any]]],
    swept: dict[str, list[dict[str, Any]]],
    default_lr: float,
) -> dict[str, Any]:
    """Gated vs standard at the one default lr and at each one's best lr."""
    out: dict[str, Any] = {"best_lr": best_lr, "default_lr": default_lr}
    for label, curves in (("without_sweep", default), ("with_sweep", swept)):
        pair = {a: curves.get(a, []) for a in ("standard", "gated")}
        m = compare(pair, "fvu")
        s, g = m["values"]["standard"]["value"], m["values"]["gated"]["value"]
        out[label] = {"matched": m, "gated_over_standard_fvu": None if not s or g is None else g / s}
    a, b = out["without_sweep"]["gated_over_standard_fvu"], out["with_sweep"]["gated_over_standard_fvu"]
    lrs = ", ".join(f"{k} {v:g}" for k, v in sorted(best_lr.items()))
    out["answer"] = (
        f"best lr per architecture: {lrs}. Gated/standard FVU ratio at matched L0: {_fmt(a, '.3f')} "
        f"with lr {default_lr:g} for both, {_fmt(b, '.3f')} with each at its best lr"
    )
    return out


def width_answer(width_points: dict[str, dict[int, list[dict[str, Any]]]], base: int) -> dict[str, Any]:
    """FVU / CE / dead / dense at one matched L0 for every (architecture, width)."""
    curves = [pts for per in width_points.values() for pts in per.values() if pts]
    at = reference_l0(*curves)
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for arch, per in width_points.items():
        table[arch] = {}
        for w, pts in sorted(per.items()):
            row = {key: value_at(pts, at, key)[0] for key in ("fvu", "ce", "dead_frac", "dense_frac")}
            row["how"] = value_at(pts, at, "fvu")[1]
            table[arch][str(w)] = row
    g_base = table.get("gated", {}).get(str(base), {}).get("fvu")
    match = None
    for w, row in sorted(table.get("standard", {}).items(), key=lambda kv: int(kv[0])):
        if g_base is not None and row["fvu"] is not None and row["fvu"] <= g_base:
            match = int(w)
            break
    parts = [
        f"{a} "
        + ", ".join(
            f"{w}x {_fmt(r['fvu'])} (dead {_fmt(r['dead_frac'], '.2f')}, dense "
            f"{_fmt(r['dense_frac'], '.2f')})"
            for w, r in rows.items()
        )
        for a, rows in table.items()
    ]
    tail = (
        f"standard first matches gated-{base}x FVU at {match}x"
        if match is not None
        else f"no standard width tried matches gated-{base}x FVU"
    )
    return {
        "l0": at,
        "table": table,
        "standard_width_matching_gated_base": match,
        "answer": f"FVU at L0 {at:.1f}: " + "; ".join(parts) + f". {tail}",
    }


def rescale_answer(frontiers: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    curves = {a: frontiers.get(a, []) for a in ("standard", "rescale_shift", "gated")}
    m = both_metrics(curves)
    v = {a: m["fvu"]["values"][a]["value"] for a in curves}
    gamma = compare(curves, "shrinkage_gamma", m["fvu"]["l0"])
    g = {a: gamma["values"][a]["value"] for a in curves}
    closed = None
    if None not in v.values() and v["standard"] != v["gated"]:
        closed = (v["standard"] - v["rescale_shift"]) / (v["standard"] - v["gated"])
    resolved = g["rescale_shift"] is not None and abs(g["rescale_shift"] - 1.0) <= GAMMA_TOL
    gap = rel_diff(v["gated"], v["rescale_shift"])  # > REL_TOL: rescale & shift still reconstructs worse
    head = (
        "not measurable"
        if gap is None
        else f"{'yes' if resolved and gap > REL_TOL else 'no'}: shrinkage {'resolved' if resolved else 'not resolved'} "
        f"(|gamma - 1| {'<=' if resolved else '>'} {GAMMA_TOL:g}), FVU {100 * gap:+.1f}% vs gated "
        f"({'short of' if gap > REL_TOL else 'within'} {100 * REL_TOL:.0f}% of it)"
    )
    text = head + (
        f"; at L0 {m['fvu']['l0']:.1f}, FVU standard {_fmt(v['standard'])}, + rescale & shift "
        f"{_fmt(v['rescale_shift'])}, gated {_fmt(v['gated'])}: rescale & shift closes "
        f"{'n/a' if closed is None else f'{100 * closed:.0f}%'} of the standard-to-gated gap; shrinkage gamma "
        f"{_fmt(g['standard'], '.3f')} -> {_fmt(g['rescale_shift'], '.3f')} (gated {_fmt(g['gated'], '.3f')})"
    )
    return {
        "compared": list(curves),
        "matched": m,
        "gamma": gamma,
        "gap_closed": closed,
        "shrinkage_resolved": resolved,
        "rel_fvu_vs_gated": gap,
        "answer": text,
    }


def stability_answer(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = {
        r["name"]: {
            k: r[k]
            for k in (
                "nonfinite_steps",
                "died",
                "max_grad_norm",
                "median_grad_norm",
                "clipped_frac",
                "lambda",
            )
        }
        | {"fvu": r["heldout"]["fvu"], "l0": r["heldout"]["l0"]}
        for r in runs
    }
    parts = [
        f"{n}: {r['nonfinite_steps']} non-finite steps, {r['died']} latents died, max grad norm "
        f"{_fmt(r['max_grad_norm'], '.3g')}"
        for n, r in rows.items()
    ]
    ref = next((r for r in runs if r["p"] == 1.0 and not r["eps"]), None)
    raw = [r for r in runs if r["p"] < 1.0 and not r["eps"]]
    ratio = None
    if ref and raw and ref.get("max_grad_norm") and all(r.get("max_grad_norm") for r in raw):
        ratio = max(r["max_grad_norm"] for r in raw) / ref["max_grad_norm"]
    bad = sum(r["nonfinite_steps"] for r in raw)
    if ratio is None and not bad:
        head = "not measurable (no p = 1 reference or no p < 1 run)"
    elif bad or (ratio is not None and ratio > EXPLODE_RATIO):
        head = f"yes: p < 1 without smoothing gave {bad} non-finite steps, max grad norm {_fmt(ratio, '.2f')}x p = 1's"
    else:
        head = (
            f"no explosion at this scale: 0 non-finite steps, max grad norm of p < 1 runs {_fmt(ratio, '.2f')}x "
            f"p = 1's (threshold {EXPLODE_RATIO:g}x)"
        )
    return {
        "runs": rows,
        "max_grad_ratio": ratio,
        "nonfinite_p_lt_1": bad,
        "answer": head + ". " + "; ".join(parts),
    }


def probing_answer(probe: dict[str, Any]) -> dict[str, Any]:
    means = {a: r["mean_acc"] for a, r in probe.get("saes", {}).items()}
    dense = probe.get("dense_mean")
    if not means:
        return {"answer": "not measured (no probe data)", "mean_acc": {}, "dense_mean": dense}
    ks = sorted({int(k) for m in means.values() for k in m})
    best = {k: max(means, key=lambda a: means[a].get(str(k), -1.0)) for k in ks}
    parts = [f"k={k}: best {best[k]} {means[best[k]][str(k)]:.3f}" for k in ks]
    return {
        "mean_acc": means,
        "dense_mean": dense,
        "best_per_k": best,
        "answer": "; ".join(parts) + f"; dense probe on raw activations {_fmt(dense, '.3f')}",
    }


def frontier_answer(frontiers: dict[str, list[dict[str, Any]]], archs: list[str]) -> dict[str, Any]:
    curves = {a: frontiers.get(a, []) for a in archs if frontiers.get(a)}
    m = both_metrics(curves)
    vals = {a: m["fvu"]["values"][a]["value"] for a in curves}
    ranked = sorted((a for a in vals if vals[a] is not None), key=lambda a: vals[a])
    text = f"FVU at L0 {m['fvu']['l0']:.1f} (best lr each): " + ", ".join(
        f"{a} {vals[a]:.4f}" for a in ranked
    )
    return {"compared": list(curves), "matched": m, "ranking": ranked, "answer": text}
