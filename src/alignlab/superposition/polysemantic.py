"""Polysemantic neurons without superposition: one constructed toy per cause in Chan (2024), "Superposition is
not 'just' neuron polysemanticity" (TL;DR), plus a superposition case to contrast (spec §6.3).

The constructions are this project's own (spec §6: the post's toy examples are not used).
"""

from __future__ import annotations

import numpy as np

from alignlab.superposition.response import (
    Guard,
    PolyReport,
    active_concepts,
    concepts_per_neuron,
    linear_guard_terms,
    response_matrix,
)

HADAMARD_4 = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=np.float64) / 2.0
"""Normalised 4x4 Hadamard matrix (orthogonal, symmetric)."""
C2_BINS = 12
C2_PROBES_PER_BIN = 1000
ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size")
ATTRIBUTE_VALUES: tuple[tuple[str, str], ...] = (("blue", "red"), ("round", "square"), ("small", "large"))


# --- C1: non-neuron-aligned orthogonal features (cause 1) ---------------------------------------------------
def c1_hidden(x: np.ndarray) -> np.ndarray:
    """h = ReLU(H x + 1) for x [batch, 4] in [0, 1]^4; pre-activations lie in [0, 3] so the ReLU is exact."""
    return np.maximum(np.asarray(x, dtype=np.float64) @ HADAMARD_4.T + 1.0, 0.0)  # [batch, 4]


def c1_decode(h: np.ndarray) -> np.ndarray:
    """x = H^T (h - 1)."""
    return (np.asarray(h) - 1.0) @ HADAMARD_4  # H^T applied to row vectors: (h - 1) @ H


def run_c1(seed: int = 0, n_check: int = 4096) -> PolyReport:
    """Four features, four neurons, each neuron a +-1/2 mix of features: polysemantic, no superposition."""
    probes = [c1_hidden(np.eye(4)[k : k + 1]) for k in range(4)]  # unit input e_k per concept
    R = response_matrix(probes, baseline=c1_hidden(np.zeros((1, 4)))[0])  # [4 neurons, 4 features] = H
    active = active_concepts(R)
    x = np.random.default_rng(seed).random((n_check, 4))
    err = float(np.abs(c1_decode(c1_hidden(x)) - x).max())
    F = HADAMARD_4.T  # feature k's direction in neuron space = column k of H
    max_cos, dims = linear_guard_terms(F)
    gram = F @ F.T
    # The polysemanticity is a choice of basis: reading the neurons through H^T makes every unit monosemantic.
    R_rotated = HADAMARD_4.T @ R
    return PolyReport(
        name="c1", concepts=[f"feature {k}" for k in range(4)], R=R, active=active,
        concepts_per_neuron=concepts_per_neuron(active),
        guard=Guard(n_features=4, n_neurons=4, max_abs_cos=max_cos, dims=dims, decode_error=err),
        extra={"gram_error": float(np.abs(gram - np.eye(4)).max()),
               "poly_frac_after_rotation": float(np.mean(active_concepts(R_rotated).sum(1) >= 2))},
    )


# --- C2: one feature, non-linear representation (cause 2) ---------------------------------------------------
def c2_hidden(x: np.ndarray) -> np.ndarray:
    """h = 1 + (cos 2 pi x, sin 2 pi x, cos 6 pi x, sin 6 pi x) for scalar x [batch] in [0, 1). Returns [batch, 4]."""
    t = 2 * np.pi * np.asarray(x, dtype=np.float64)
    return 1.0 + np.stack([np.cos(t), np.sin(t), np.cos(3 * t), np.sin(3 * t)], axis=-1)


def c2_decode(h: np.ndarray) -> np.ndarray:
    """x = atan2(h_2 - 1, h_1 - 1) / 2 pi (mod 1)."""
    return (np.arctan2(h[:, 1] - 1.0, h[:, 0] - 1.0) / (2 * np.pi)) % 1.0


def affine_probe_r2(x: np.ndarray, h: np.ndarray) -> float:
    """R^2 of the least-squares affine map h -> x (is the feature a direction?)."""
    A = np.concatenate([h, np.ones((len(h), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(A, x, rcond=None)
    resid = x - A @ coef
    return float(1.0 - resid @ resid / np.sum((x - x.mean()) ** 2))


def run_c2(n_bins: int = C2_BINS, per_bin: int = C2_PROBES_PER_BIN) -> PolyReport:
    """One scalar feature on a circle and its third harmonic: four neurons, two of them fire on separate x ranges."""
    offsets = (np.arange(per_bin) + 0.5) / per_bin  # evenly spaced probes inside each bin
    xs = [(k + offsets) / n_bins for k in range(n_bins)]
    acts = [c2_hidden(x) for x in xs]
    pooled = np.concatenate(acts)
    R = response_matrix(acts, baseline=pooled.mean(axis=0))  # [4, n_bins]
    active = active_concepts(R)
    x_all = np.concatenate(xs)
    d = np.abs(c2_decode(pooled) - x_all)
    err = float(np.minimum(d, 1.0 - d).max())  # circular distance: x and x + 1 are the same point
    return PolyReport(
        name="c2", concepts=[f"x in [{k / n_bins:.3f}, {(k + 1) / n_bins:.3f})" for k in range(n_bins)],
        R=R, active=active, concepts_per_neuron=concepts_per_neuron(active, ordered=True),
        guard=Guard(n_features=1, n_neurons=4, max_abs_cos=None, dims=None, decode_error=err),
        extra={"affine_probe_r2": affine_probe_r2(x_all, pooled), "active_bins": [int(v) for v in active.sum(1)]},
    )


# --- C3: compositional code (cause 3) -------------------------------------------------------------------------
def bits(v: int, n: int = 3) -> np.ndarray:
    return np.array([(v >> j) & 1 for j in range(n)], dtype=np.float64)


def object_name(v: int) -> str:
    return " ".join(ATTRIBUTE_VALUES[j][int(b)] for j, b in enumerate(bits(v)))


def c3_readout(h: np.ndarray) -> np.ndarray:
    """logit_v = sum_j (2 bit_j(v) - 1)(h_j - 0.5) for all 8 objects. h [batch, 3] -> [batch, 8]."""
    signs = np.stack([2 * bits(v) - 1 for v in range(8)])  # [8, 3]
    return (np.asarray(h) - 0.5) @ signs.T


def run_c3() -> tuple[PolyReport, PolyReport]:
    """Three attribute neurons, eight objects: (object-level report, attribute-level report)."""
    objects = np.stack([bits(v) for v in range(8)])  # [8, 3] attribute values
    h = np.maximum(objects, 0.0)  # h = ReLU(a) = a
    logits = c3_readout(h)
    correct = int(np.sum(logits.argmax(1) == np.arange(8)))
    margin = float(np.min(logits[np.arange(8), np.arange(8)] - np.sort(logits, axis=1)[:, -2]))
    R_obj = response_matrix([h[v : v + 1] for v in range(8)], baseline=h.mean(axis=0))  # [3, 8]
    a_obj = active_concepts(R_obj)
    max_cos, dims = linear_guard_terms(np.eye(3))
    guard = Guard(n_features=3, n_neurons=3, max_abs_cos=max_cos, dims=dims, decode_error=0.0)
    extra = {"readout_correct": correct, "readout_margin": margin}
    obj = PolyReport(name="c3", concepts=[object_name(v) for v in range(8)], R=R_obj, active=a_obj,
                     concepts_per_neuron=concepts_per_neuron(a_obj), guard=guard, extra=extra)
    R_att = response_matrix([np.eye(3)[k : k + 1] for k in range(3)], baseline=np.zeros(3))  # [3, 3]
    a_att = active_concepts(R_att)
    att = PolyReport(name="c3-attributes", concepts=list(ATTRIBUTES), R=R_att, active=a_att,
                     concepts_per_neuron=concepts_per_neuron(a_att), guard=guard, extra=extra)
    return obj, att


def xor_neuron(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a XOR b from two ReLU units: g1 = ReLU(a + b), g2 = ReLU(a + b - 1), out = ReLU(g1 - 2 g2)."""
    g1 = np.maximum(a + b, 0.0)
    g2 = np.maximum(a + b - 1.0, 0.0)
    return np.maximum(g1 - 2.0 * g2, 0.0)


def run_c3_xor() -> PolyReport:
    """A neuron computing colour XOR shape fires on two unrelated conjunctions."""
    names = ["blue & round", "red & round", "blue & square", "red & square"]
    pairs = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]  # (colour bit, shape bit)
    acts = [np.array([[a, b, xor_neuron(np.array(a), np.array(b))]]) for a, b in pairs]  # neurons: colour, shape, xor
    pooled = np.concatenate(acts)
    R = response_matrix(acts, baseline=pooled.mean(axis=0))  # [3, 4]
    active = active_concepts(R)
    xor_ok = all(float(acts[k][0, 2]) == float(int(a) ^ int(b)) for k, (a, b) in enumerate(pairs))
    return PolyReport(
        name="c3-xor", concepts=names, R=R, active=active, concepts_per_neuron=concepts_per_neuron(active),
        guard=Guard(n_features=2, n_neurons=3, max_abs_cos=0.0, dims=[1.0, 1.0], decode_error=0.0),
        extra={"xor_exact": xor_ok, "xor_active": [names[k] for k in np.flatnonzero(active[2])]},
    )


# --- Contrast: superposition ----------------------------------------------------------------------------------
def pentagon(norm: float = 1.12, phase_deg: float = 0.0) -> np.ndarray:
    """Five feature rows at 72 deg spacing in two dimensions (the sparse TMS solution, spec §5.1). [5, 2]."""
    ang = np.radians(phase_deg + 72.0 * np.arange(5))
    return norm * np.stack([np.cos(ang), np.sin(ang)], axis=1)


def rotation_scan_poly_frac(W: np.ndarray, n_angles: int = 720) -> float:
    """min over hidden-space rotations of poly_frac with |R| (m = 2): can any basis make the neurons monosemantic?"""
    best = 1.0
    for theta in np.linspace(0, np.pi, n_angles, endpoint=False):
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        active = active_concepts((W @ rot).T, absolute=True)
        best = min(best, float(np.mean(active.sum(1) >= 2)))
    return best


def run_superposition(W: np.ndarray | None = None, b: np.ndarray | None = None) -> PolyReport:
    """Five features in two neurons (default: a regular pentagon as trained by ``intro`` at 1 - S = 0.05)."""
    W = pentagon() if W is None else np.asarray(W, dtype=np.float64)
    n, m = W.shape
    R = response_matrix([W[k : k + 1] for k in range(n)], baseline=np.zeros(m))  # h = W^T e_k; [m, n]
    active = active_concepts(R)
    max_cos, dims = linear_guard_terms(W)
    extra = {"n_features_over_neurons": n / m}
    if m == 2:
        extra["min_poly_frac_over_rotations_abs"] = rotation_scan_poly_frac(W)
    # Exact decoding of a generic x is impossible with n > m: report the error on the unit inputs.
    recon = np.maximum(np.eye(n) @ W @ W.T + (0 if b is None else np.asarray(b)), 0.0)
    return PolyReport(
        name="superposition", concepts=[f"feature {k}" for k in range(n)], R=R, active=active,
        concepts_per_neuron=concepts_per_neuron(active),
        guard=Guard(n_features=n, n_neurons=m, max_abs_cos=max_cos, dims=dims,
                    decode_error=float(np.abs(recon - np.eye(n)).max())),
        extra=extra,
    )


def run_c1_trained(seed: int = 0, replicates: int = 5, steps: int = 2000) -> dict:
    """Demonstration (not a gate): TMS with n = m = 4, dense data, equal importance, ``replicates`` instances.

    The loss is unchanged by rotating h, so W is an arbitrary rotation: report D_i and concepts per neuron (|R|).
    """
    from alignlab.superposition.config import TMSConfig
    from alignlab.superposition.metrics import dimensionality
    from alignlab.superposition.runs import train

    cfg = TMSConfig(n=4, m=4, L=replicates, importance=(1.0,) * 4, feature_prob=(1.0,) * replicates,
                    steps=steps, seed=seed, preset="tms-notebook")
    res = train(cfg, progress=False)
    D = dimensionality(res.W)
    rows = []
    for k in range(replicates):
        R = res.W[k].T  # [neurons, features]: h_j for input e_k is W_kj
        rows.append({"dims": [float(v) for v in D[k]],
                     "concepts_per_neuron_abs": concepts_per_neuron(active_concepts(R, absolute=True))})
    return {"config": {"n": 4, "m": 4, "replicates": replicates, "steps": steps, "seed": seed}, "replicates": rows}
