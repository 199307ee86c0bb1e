"""`alignlab superposition intro | features | dims | phase | polysemantic` (spec §8).

Only argparse/stdlib at import time; torch and numpy load inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from alignlab.config import add_dataclass_args, from_args
from alignlab.io import ensure_dir

DEFAULT_OUT = Path("runs") / "superposition"
DEFAULT_RESTARTS = {"intro": 4, "features": 1, "dims": 1, "phase": 3}
HELP = {
    "intro": "5 features in 2 dimensions across sparsity: orthogonal -> antipodal -> pentagon",
    "features": "100 features of decaying importance in 20 dimensions: norms and interference",
    "dims": "200 features in 20 dimensions: feature dimensionality and the sticky fractions",
    "phase": "sparsity x importance phase diagram, 2 features in 1 dimension",
}


def register(sub: argparse._SubParsersAction) -> None:
    from alignlab.superposition.config import RunOptions

    p = sub.add_parser("superposition", help="toy models of superposition and polysemanticity without it")
    p.set_defaults(group_parser=p)
    cmds = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in HELP.items():
        c = cmds.add_parser(name, help=text, description=text)
        add_dataclass_args(c, RunOptions)
        _common(c, name)
        c.set_defaults(func=_run_tms, experiment=name)
    c = cmds.add_parser("polysemantic", help="polysemantic neurons without superposition (Chan 2024), 3 causes",
                        description="c1: rotated orthogonal basis; c2: non-linear feature; c3: compositional code; "
                        "super: a superposition case to contrast; all: every case.")
    c.add_argument("case", choices=["c1", "c2", "c3", "super", "all"], help="which construction")
    c.add_argument("--xor", action="store_true", help="c3: add a neuron computing colour XOR shape")
    c.add_argument("--companion-steps", type=int, default=2000,
                   help="c1: steps of the trained n = m = 4 companion (0 skips it; default 2000)")
    c.add_argument("--seed", type=int, default=0, help="seed for the c1 companion and decode checks")
    _common(c, "polysemantic")
    c.set_defaults(func=_run_poly)


def _common(c: argparse.ArgumentParser, name: str) -> None:
    c.add_argument("--out", type=Path, default=None, help=f"output folder (default: {DEFAULT_OUT / name})")
    c.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout instead of a table")


def _emit(args: argparse.Namespace, saved, payload: dict) -> int:
    if args.json:
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(saved.summary)
        pages = f"{saved.out}/report.html" + ("" if args.out else f" and {DEFAULT_OUT}/report.html (all commands)")
        print(f"wrote {saved.out}/metrics.json, CSVs and plots; page: {pages}")
    return 0


def _report_root(args: argparse.Namespace) -> Path | None:
    """With the default layout, runs/superposition/report.html gathers every command's plots."""
    return None if args.out else DEFAULT_OUT


def _run_tms(args: argparse.Namespace) -> int:
    from alignlab.superposition.config import RunOptions
    from alignlab.superposition.presets import experiment_config

    opts = from_args(RunOptions, args)
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    exp = args.experiment
    cfg = experiment_config(exp, opts.preset, seed=opts.seed, steps=opts.steps, batch=opts.batch, lr=opts.lr,
                            lr_schedule=opts.lr_schedule, init=opts.init, linear=opts.linear or None,
                            signed=opts.signed or None)
    restarts = opts.restarts or DEFAULT_RESTARTS[exp]
    out = ensure_dir(args.out or DEFAULT_OUT / exp)  # before training: a bad --out fails in a second
    from alignlab.superposition import pipeline

    if exp == "intro":
        from alignlab.superposition.intro import run_intro

        saved = pipeline.save_intro(cfg, run_intro(cfg, restarts, opts.backend), out, opts.backend, restarts,
                                    report_root=_report_root(args))
    elif exp == "phase":
        from alignlab.superposition.phase import run_phase

        saved = pipeline.save_phase(cfg, run_phase(cfg, restarts, opts.backend), out, opts.backend, restarts,
                                    report_root=_report_root(args))
    else:
        from alignlab.superposition.dims import run_dims

        saved = pipeline.save_dims(cfg, run_dims(cfg, restarts, opts.backend), out, opts.backend, restarts, exp,
                                   report_root=_report_root(args))
    return _emit(args, saved, saved.metrics)


def _run_poly(args: argparse.Namespace) -> int:
    from alignlab.errors import AlignlabError
    from alignlab.superposition import pipeline, polysemantic

    if args.companion_steps < 0:
        raise AlignlabError(f"--companion-steps must be >= 0 (got {args.companion_steps})")
    case = args.case
    out = ensure_dir(args.out or DEFAULT_OUT / "polysemantic")
    reports, extra = [], {}
    if case in ("c1", "all"):
        reports.append(polysemantic.run_c1(seed=args.seed))
        if args.companion_steps:
            extra["c1_trained_companion"] = polysemantic.run_c1_trained(seed=args.seed, steps=args.companion_steps)
    if case in ("c2", "all"):
        reports.append(polysemantic.run_c2())
    if case in ("c3", "all"):
        reports.extend(polysemantic.run_c3())
        if args.xor:
            reports.append(polysemantic.run_c3_xor())
    if case in ("super", "all"):
        reports.append(polysemantic.run_superposition())
    saved = pipeline.save_poly(reports, out, extra, report_root=_report_root(args))
    return _emit(args, saved, saved.metrics)
