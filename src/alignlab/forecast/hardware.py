"""GPU FLOP/s baseline with process-size and transistors-per-core limits (spec §8.1 "Hardware baseline").

Port of ``gpu_efficiency.py`` (timelines-direct-approach, unchanged since bce5a25; data/ since f9bdda8). The
fitted lines that the reference loads from pickles and arrays are stored here as numbers: each stored array
is exactly linear in Unix time (residuals < 3e-15), so intercept + slope reproduces it.
"""

from __future__ import annotations

import math

import numpy as np

# Time grid: 1 001 evenly spaced points from (earliest release - 1e8 s) to (latest + 1e9 s) of
# data/gpu_trends_factors_clean.csv, i.e. 2002-09-21 .. 2052-12-19 (spec §8.1).
GRID_T0 = 1_032_617_600.0
GRID_STEP = 1_585_568.0
GRID_POINTS = 1001
GRID = GRID_T0 + GRID_STEP * np.arange(GRID_POINTS)  # [1001] Unix seconds

# First grid index in each calendar year 2023..2052 (UTC; valid for offsets -8 h .. +13 h).
YEAR_INDICES: tuple[int, ...] = (
    404,
    424,
    444,
    464,
    484,
    504,
    524,
    543,
    563,
    583,
    603,
    623,
    643,
    663,
    683,
    703,
    723,
    742,
    762,
    782,
    802,
    822,
    842,
    862,
    882,
    902,
    922,
    941,
    961,
    981,
)

# (intercept, slope per second) of the log10 lines; sources in data/ as listed in spec §8.1.
PROCESS_SIZE = (4.359329479566028, -2.1908149342524868e-9)  # time_process_size_pred_x2_q005, log10 nm
TRANSISTORS = (-1.7054015150778039, 3.5620835889231534e-9)  # OLS, log10 millions of transistors
CORES: dict[float, tuple[float, float]] = {  # time_num_cores_pred_x2_q*, log10 cores
    0.80: (-1.6362665592558314, 3.366322195106478e-9),
    0.85: (-1.0477299272538518, 3.0252492617353733e-9),
    0.90: (-0.7293906413681439, 2.874640100540739e-9),
    0.95: (-0.1670172016403657, 2.5532050646632783e-9),
}
CORE_QUANTILES: tuple[float, ...] = (0.80, 0.85, 0.90, 0.95)
# MVP_results.pkl: FP32_flops_log10 ~ process_size_in_nm_log10 + num_cores_log10.
FLOPS_FIT = (10.084356977902107, -0.4117506135075512, 0.9198718705452034)


def year_index(year: int) -> int:
    """First grid index in calendar ``year`` (UTC)."""
    import calendar

    t = calendar.timegm((year, 1, 1, 0, 0, 0))
    return math.ceil((t - GRID_T0) / GRID_STEP)


def _line(coef: tuple[float, float], t: np.ndarray) -> np.ndarray:
    return coef[0] + coef[1] * t


def flops_fit(process_log10: np.ndarray, cores_log10: np.ndarray) -> np.ndarray:
    """Phi(pi, kappa): log10 FP32 FLOP/s of one GPU."""
    return FLOPS_FIT[0] + FLOPS_FIT[1] * process_log10 + FLOPS_FIT[2] * cores_log10


def baseline_flops_per_second(
    process_limit_nm: np.ndarray,
    transistors_per_core_limit: np.ndarray,
    quantile_index: np.ndarray,
    n_years: int,
) -> np.ndarray:
    """log10 FP32 FLOP/s per rollout and year: B_n for n < 30, then B_29 carried forward.  # [n, n_years]

    process_limit_nm, transistors_per_core_limit (millions per core), quantile_index (0..3): each [n].
    """
    process_grid = _line(PROCESS_SIZE, GRID)  # [1001], strictly decreasing
    limit_log = np.log10(np.asarray(process_limit_nm, dtype=float))  # [n]
    # t*: earliest grid time with pi(t) <= log10 L_p (the floor first applies); if never, no transistor cap.
    k_star = np.searchsorted(-process_grid, -limit_log, side="left")  # [n]
    reached = k_star < GRID_POINTS
    t_star = GRID[np.minimum(k_star, GRID_POINTS - 1)]
    trans_cap = np.where(reached, _line(TRANSISTORS, t_star), np.inf)  # [n]

    t_years = GRID[list(YEAR_INDICES)]  # [30]
    pi = np.maximum(_line(PROCESS_SIZE, t_years)[None, :], limit_log[:, None])  # [n, 30]
    trans = np.minimum(_line(TRANSISTORS, t_years)[None, :], trans_cap[:, None])  # [n, 30]
    cores_all = np.stack([_line(CORES[q], t_years) for q in CORE_QUANTILES])  # [4, 30]
    cores = cores_all[np.asarray(quantile_index, dtype=int)]  # [n, 30]
    cores = np.minimum(cores, trans - np.log10(np.asarray(transistors_per_core_limit, dtype=float))[:, None])
    base = flops_fit(pi, cores)  # [n, 30]
    if n_years <= base.shape[1]:
        return base[:, :n_years]
    tail = np.repeat(base[:, -1:], n_years - base.shape[1], axis=1)
    return np.concatenate([base, tail], axis=1)
