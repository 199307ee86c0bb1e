"""Time the refusal/KL search on a real model (issue 13 §6): trials/s, the whole search, and RD's selection
on the same run for reference.

Runs `alignlab refusal search` with the default search settings into a fresh run directory (or reuses the
tokens/directions/selection of ``--out`` when present), then prints the search's own timings from its
artifacts. The search's cost is its trials (one batched forward + a few greedy tokens each) plus the
confirmations by generation.

    python bench/refusal_search.py [--model smollm2-135m-refusal] [--out runs/bench-search] [--trials 48]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-refusal")
    parser.add_argument("--out", default="runs/bench-search")
    parser.add_argument("--trials", type=int, default=None, help="override --search-trials")
    parser.add_argument("--fresh-search", action="store_true", help="delete an earlier search of --out first")
    args = parser.parse_args()

    from alignlab.cli import main as cli

    out = Path(args.out)
    if args.fresh_search:
        for name in ("search.json", "search.journal", "search.journal.lock"):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    argv = ["refusal", "search", args.model, "--out", str(out)]
    if args.trials:
        argv += ["--search-trials", str(args.trials)]
    start = time.perf_counter()
    code = cli(argv)
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(code)
    search = json.loads((out / "search.json").read_text())
    selection = json.loads((out / "selection.json").read_text())
    n = len(search["trials"])
    print(f"model {args.model}: {n} trials + {sum(p['confirmed'] is not None for p in search['pareto'])} "
          f"confirmations in {search['seconds']:.1f} s ({n / search['seconds']:.3f} trials/s incl. confirmation)")
    print(f"RD selection on the same run: {selection.get('seconds', float('nan')):.1f} s; whole command {wall:.1f} s "
          "(reused stages cost ~0)")
    ch = search["chosen"]
    print(f"chosen trial {ch['trial']}: refusal {ch['refusal']:.3f} {ch['wilson95']} at KL {ch['kl']:.3f}; "
          f"{search['note']}")


if __name__ == "__main__":
    main()
