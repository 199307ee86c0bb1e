"""Full-schedule checks of the superposition subsystem (spec §5, §9) and the fused-gradient speed-up.

    python bench/superposition_full.py --part intro   # seeds 0-4, single run vs best of 4: gate pattern
    python bench/superposition_full.py --part dims    # 200 -> 20, 10 000 steps, batch 1024: dims gates
    python bench/superposition_full.py --part phase   # 121-cell grid: corner gates
    python bench/superposition_full.py --part speed   # fused vs autograd step time (ratio, same process)

``--steps`` shortens every schedule for a quick look. Prints one line per check; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def intro_gates(levels) -> dict[str, bool]:
    dense, sparse, middle = levels[0], levels[-2:], levels[1:-2]
    return {
        "dense_orthogonal": sorted(dense.geometry.represented) == [0, 1] and dense.arrangement == "orthogonal"
        and 0.95 <= dense.d_star <= 1.05,
        "sparse_pentagons": all(lv.n_represented == 5 and all(abs(g - 72) <= 6 for g in lv.geometry.gaps_deg)
                                and max(lv.geometry.biases) < 0 and 0.28 <= lv.d_star <= 0.36 for lv in sparse),
        "antipodal_between": any(lv.geometry.antipodal_pairs for lv in middle),
    }


def part_intro(steps: int | None, seeds: list[int], restarts_list: list[int]) -> None:
    from alignlab.superposition.intro import run_intro
    from alignlab.superposition.presets import experiment_config

    for restarts in restarts_list:
        for seed in seeds:
            t0 = time.perf_counter()
            res = run_intro(experiment_config("intro", seed=seed, steps=steps), restarts=restarts, progress=False)
            gates = intro_gates(res.levels)
            arr = " ".join(f"{lv.n_represented}{lv.arrangement[:4]}" for lv in res.levels)
            print(f"intro restarts={restarts} seed={seed} {time.perf_counter() - t0:6.1f}s "
                  f"{' '.join(f'{k}={int(v)}' for k, v in gates.items())}  [{arr}]", flush=True)


def part_dims(steps: int | None) -> None:
    from alignlab.superposition.dims import dims_table, plateau_run, run_dims
    from alignlab.superposition.presets import experiment_config

    t0 = time.perf_counter()
    res = run_dims(experiment_config("dims", seed=0, steps=steps), progress=None)
    lv = res.levels
    print(dims_table(lv))
    window = [x for x in lv if 2 <= x.inv_density <= 4]
    print(f"dims seed=0 {time.perf_counter() - t0:.1f}s ends={int(0.95 <= lv[0].d_star <= 1.05 and lv[-1].d_star <= 0.2)}"
          f" plateau_levels={plateau_run(lv)} half_line={int(any(x.lines['1/2'].present for x in window))}"
          f" other_line={int(any(x.lines[f].present for x in lv for f in ('2/3', '2/5', '3/8')))}")
    D = np.array([x.dims for x in lv if x.d_star < 0.95])
    near = np.min(np.abs(D[..., None] - np.array([1, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8])), axis=-1) <= 0.02
    print(f"share of features (D_i >= 0.1, D* < 0.95) within 0.02 of a fraction: {near[D >= 0.1].mean():.2f}")


def part_phase(steps: int | None) -> None:
    from alignlab.superposition.phase import find_cell, phase_table, run_phase
    from alignlab.superposition.presets import experiment_config

    for restarts in (1, 3):
        t0 = time.perf_counter()
        cells = run_phase(experiment_config("phase", steps=steps), restarts=restarts, progress=False).cells
        sparse = find_cell(cells, 0.01, 1.0)
        print(phase_table(cells))
        print(f"phase restarts={restarts} {time.perf_counter() - t0:.1f}s "
              f"corner_r0.1={find_cell(cells, 1, 0.1).phase} corner_r10={find_cell(cells, 1, 10).phase} "
              f"sparse={sparse.phase} dot={sparse.dot:.2f}")


def part_speed(steps: int | None) -> None:
    from alignlab.superposition.presets import experiment_config
    from alignlab.superposition.tms import train_torch

    cfg = experiment_config("dims", steps=steps or 30)
    times = {}
    for grad in ("autograd", "fused", "autograd", "fused"):  # interleaved, best of two
        t0 = time.perf_counter()
        train_torch(cfg, progress=False, grad=grad)
        times[grad] = min(times.get(grad, 1e9), (time.perf_counter() - t0) / cfg.steps)
    print(f"dims step (L=20, batch 1024, n=200, m=20, {torch.get_num_threads()} threads): autograd "
          f"{1e3 * times['autograd']:.1f} ms, fused {1e3 * times['fused']:.1f} ms, "
          f"speed-up x{times['autograd'] / times['fused']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["intro", "dims", "phase", "speed", "all"], default="all")
    parser.add_argument("--steps", type=int, default=None, help="override the schedule's steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="intro seeds")
    parser.add_argument("--restarts", type=int, nargs="+", default=[1, 4], help="intro restart counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = ["speed", "intro", "phase", "dims"] if args.part == "all" else [args.part]
    for part in parts:
        if part == "intro":
            part_intro(args.steps, args.seeds, args.restarts)
        else:
            globals()[f"part_{part}"](args.steps)


if __name__ == "__main__":
    main()
