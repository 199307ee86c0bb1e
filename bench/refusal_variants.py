"""Issue 13 §6's side-by-side table: RD's pick, the search's pick and the direction / edit variants on the
same held-out test prompts, measured in one go.

Each row is a `refusal run` in its own directory under ``--out`` (directories start as copies of the RD
run, so the stages a row shares with it are reused, not recomputed). Rows: RD at ``--kl-max 0.5`` (the KL
bound the demo used before the search existed), the search (``--select search``), projected direction,
norm-preserving biprojected edit and ACE, the last three on RD's selection settings. Reported per row: harmful refusal of the condition
the variant changes (ablated hooks, or the edited weights for the biprojected edit) with its Wilson 95 %
interval at ``--max-new-tokens`` new tokens, first-token KL and CE on harmless test prompts, and the
degenerate-output rate on harmful and harmless test replies.

    python bench/refusal_variants.py [--model smollm2-135m-refusal] [--out runs/variants] [--max-new-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

RD = ["--select", "rd", "--kl-max", "0.5", "--subspace-rank", "1"]  # single-direction rows: no subspace growth
ROWS: dict[str, tuple[list[str], str]] = {
    "RD pick (kl-max 0.5)": (RD, "ablated"),
    "search (Pareto, chosen point)": (["--select", "search", "--subspace-rank", "1"], "ablated"),
    "projected direction": ([*RD, "--direction", "projected"], "ablated"),
    "norm-preserving biprojected edit": ([*RD, "--norm-preserve", "biprojected"], "edited"),
    "ACE (affine, hooks)": ([*RD, "--direction", "ace"], "ablated"),
}
KEEP = ("prompts.json", "tokens.json", "directions.json", "directions.safetensors", "selection.json",
        "direction.safetensors", "search.json", "search.journal", "base.json", "hooked.json")
"""Stage artifacts a row starts with (each is reused only where its key matches: base replies by every row, the
hooked conditions by the biprojected edit, which changes only the weights)."""


def row(report: dict, condition: str) -> dict:
    rates = report["rates"][condition]
    harmful, harmless = rates["harmful"], rates["harmless"]
    lo, hi = harmful["wilson95"]
    degenerate = (harmful["flags"].get("degenerate", 0.0) * harmful["n"] + harmless["flags"].get("degenerate", 0.0)
                  * harmless["n"]) / (harmful["n"] + harmless["n"])
    return {"condition": condition, "harmful_refusal": harmful["rate"], "k": harmful["k"], "n": harmful["n"],
            "wilson95": [lo, hi], "kl": report["kl_harmless"][condition],
            "ce": report["ce_harmless"].get(condition), "ce_base": report["ce_harmless"].get("base"),
            "degenerate": degenerate, "base_harmful_refusal": report["rates"]["base"]["harmful"]["rate"],
            "harmless_refusal_added": report["rates"]["added"]["harmless"]["rate"],
            "selection_method": report["selection_method"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-refusal")
    parser.add_argument("--out", default="runs/variants")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--only", nargs="*", default=None, help="row names (prefixes) to run")
    parser.add_argument("--n-test", type=int, default=None, help="harmful and harmless test prompts per row")
    parser.add_argument("--seed-row", action="append", default=[], metavar="I=DIR",
                        help="start row I as a copy of the stage artifacts of run directory DIR")
    args = parser.parse_args()

    from alignlab.cli import main as cli

    out = Path(args.out)
    seeds = {int(k): Path(v) for k, v in (x.split("=", 1) for x in args.seed_row)}
    extra = ["--n-test-harmful", str(args.n_test), "--n-test-harmless", str(args.n_test)] if args.n_test else []
    results = {}
    for i, (name, (flags, condition)) in enumerate(ROWS.items()):
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        run = out / f"row{i}"
        first = seeds.get(i, out / "row0")
        if (i or i in seeds) and first.is_dir() and not run.exists():
            run.mkdir(parents=True)
            for f in KEEP:
                if (first / f).is_file():
                    shutil.copy2(first / f, run / f)
        start = time.perf_counter()
        code = cli(["refusal", "run", args.model, "--out", str(run), *flags, "--no-export",
                    "--eval-max-new-tokens", str(args.max_new_tokens), *extra])
        if code != 0:
            raise SystemExit(f"{name}: refusal run exited {code}")
        report = json.loads((run / "report.json").read_text())
        results[name] = {**row(report, condition), "flags": flags, "seconds": round(time.perf_counter() - start, 1)}
    (out / "variants.json").write_text(json.dumps(results, indent=2))
    print(f"\n{args.model}, held-out test split, greedy, {args.max_new_tokens} new tokens, judge rd\n")
    print("| row | condition | harmful refusal [Wilson 95 %] | first-token KL | CE (base) | degenerate |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        ce = f"{r['ce']:.3f} ({r['ce_base']:.3f})" if r["ce"] is not None else "-"
        print(f"| {name} | {r['condition']} | {r['k']}/{r['n']} = {r['harmful_refusal']:.2f} "
              f"[{r['wilson95'][0]:.2f}, {r['wilson95'][1]:.2f}] | {r['kl']:.3f} | {ce} | {r['degenerate']:.2f} |")


if __name__ == "__main__":
    main()
