"""``alignlab sae study ACTS --out DIR`` (issue 17). Only argparse at import time: ``alignlab --help`` stays fast."""

from __future__ import annotations

import argparse
import sys


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None


def register_study(cmds: argparse._SubParsersAction) -> None:
    c = cmds.add_parser(
        "study",
        help="frontiers, gated ablations, width, L_p stability and sparse probing -> "
        "study.json + study.html (issue 17)",
    )
    c.add_argument(
        "acts", help="activation cache directory (from `alignlab sae cache`, e.g. layer 15 residuals)"
    )
    c.add_argument("--out", required=True, help="study folder (rerun with the same settings to resume)")
    c.add_argument(
        "--quick",
        action="store_true",
        help="smaller study (2x base width, widths 1-4x, 100 steps x 256 tokens): <= 20 min on 2 CPU cores",
    )
    c.add_argument("--steps", type=int, default=None, help="optimiser steps per SAE (default 200; quick 100)")
    c.add_argument("--batch-size", type=int, default=None, help="tokens per step (default 512; quick 256)")
    c.add_argument(
        "--expansion", type=int, default=None, help="frontier width / d_model (default 4; quick 2)"
    )
    c.add_argument(
        "--lrs", type=_floats, default=None, help="comma-separated lr sweep (default 1e-4,3e-4,1e-3)"
    )
    c.add_argument(
        "--widths", type=_ints, default=None, help="width study, x d_model (default 4,8,16,32; quick 1,2,4)"
    )
    c.add_argument("--ce-tokens", type=int, default=None, help="held-out tokens for CE recovered (0: skip)")
    c.add_argument(
        "--probe-tokens", type=int, default=None, help="stdlib source tokens for probing (0: skip)"
    )
    c.add_argument(
        "--no-lm", action="store_true", help="skip CE loss recovered and probing (no model is loaded)"
    )
    c.add_argument(
        "--model", default=None, help="model for CE and probing (default: the one the cache records)"
    )
    c.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    c.add_argument("--device", default="auto", help="SAE training device: cpu | cuda | auto (default auto)")
    c.add_argument("--progress", action="store_true", help="show the trainer's progress bars")
    c.set_defaults(func=_cmd_study)


def study_config(args: argparse.Namespace):
    from alignlab.sae.study_config import StudyConfig, quick_config

    fields = {"seed": args.seed, "device": args.device}
    for flag, key in (
        ("steps", "steps"),
        ("batch_size", "batch_size"),
        ("expansion", "expansion"),
        ("lrs", "lrs"),
        ("widths", "widths"),
        ("ce_tokens", "ce_tokens"),
        ("probe_tokens", "probe_tokens"),
    ):
        if getattr(args, flag) is not None:
            fields[key] = getattr(args, flag)
    if args.steps is not None:
        fields["stability_steps"] = args.steps
    if args.lrs is not None and 3e-4 not in args.lrs:
        fields["default_lr"] = args.lrs[len(args.lrs) // 2]
    return quick_config(**fields) if args.quick else StudyConfig(**fields)


def _cmd_study(args: argparse.Namespace) -> int:
    import time

    from alignlab.errors import AlignlabError
    from alignlab.sae.cache import ActivationCache
    from alignlab.sae.study import run_study
    from alignlab.sae.study_report import answers_markdown

    cfg = study_config(args)
    lm = None
    if not args.no_lm and (cfg.ce_tokens or cfg.probe_tokens):
        spec = args.model or ActivationCache(args.acts).manifest.get("model")
        if not spec:
            raise AlignlabError(f"{args.acts} records no model; pass --model or --no-lm")
        from alignlab.sae.activations import load_lm

        lm = load_lm(spec, None, None)
    t0 = time.perf_counter()
    study = run_study(
        args.acts,
        args.out,
        cfg,
        lm=lm,
        log=lambda m: print(f"[study] {m}", file=sys.stderr, flush=True),
        progress=args.progress,
    )
    print(answers_markdown(study))
    print(f"wrote {args.out}/study.json and {args.out}/study.html in {time.perf_counter() - t0:.0f} s")
    return 0
