"""Published and re-derived comparison targets (spec §9), used by the CLI to print deltas.

The requirement quantiles and HEAD timeline figures are the spec authors' re-computation (importance-sampled
posterior, 20 000 samples), not Epoch publications; the README figures are Epoch's (2023-08-23).
"""

from __future__ import annotations

# (params, mode) -> variant -> (p10, p50, p90), log10 effective FLOP (spec §9).
REQUIREMENT_TABLE: dict[tuple[str, str], dict[str, tuple[float, float, float]]] = {
    ("hoffmann2022", "reference"): {
        "raw": (25.6, 35.6, 47.6),
        "updated": (29.4, 37.7, 48.1),
        "updated_scaled": (28.2, 34.1, 41.5),
    },
    ("hoffmann2022", "gfix"): {
        "raw": (24.7, 34.5, 46.0),
        "updated": (29.1, 36.7, 46.6),
        "updated_scaled": (27.9, 33.4, 40.4),
    },
    ("hoffmann2022", "corrected"): {
        "raw": (25.7, 35.5, 47.2),
        "updated": (29.4, 37.6, 47.5),
        "updated_scaled": (28.1, 34.0, 41.1),
    },
    ("besiroglu2024", "reference"): {
        "raw": (24.0, 32.5, 42.1),
        "updated": (28.3, 34.6, 42.8),
        "updated_scaled": (27.3, 31.8, 37.7),
    },
    ("besiroglu2024", "gfix"): {
        "raw": (23.6, 31.9, 41.2),
        "updated": (28.1, 34.0, 42.0),
        "updated_scaled": (27.2, 31.4, 37.1),
    },
    ("besiroglu2024", "corrected"): {
        "raw": (24.4, 32.8, 42.2),
        "updated": (28.3, 34.7, 42.9),
        "updated_scaled": (27.4, 32.0, 37.8),
    },
}

# Timeline re-computation at HEAD defaults (spec §9): P(2030/2050/2100) in percent.
HEAD_TIMELINE: dict[str, dict[str, float]] = {
    "reference": {"2030": 58.7, "2050": 86.0, "2100": 91.2},
    "corrected": {"2030": 58.0, "2050": 85.8, "2100": 91.1},
}

# Plots.ipynb saved output (raw requirements, 2023-03-03); its configuration is NOT established: docs only.
PLOTS_NOTEBOOK_PERCENTILES = {5: 22.8, 15: 27.0, 25: 29.5, 50: 34.1, 75: 38.8, 85: 41.3, 95: 45.5}
