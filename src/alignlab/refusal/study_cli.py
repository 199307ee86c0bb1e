"""`alignlab refusal study`: options and handler (argparse-level imports only, so `alignlab --help` stays fast)."""

from __future__ import annotations

import argparse

DEFAULT_MODELS = ("smollm2-135m-refusal",)
HELP = (
    "the source thread's claims measured side by side on the same held-out prompts: contrast source, token "
    "position, all-layer projection vs single-layer steering, projection vs magnitude sweep, weight edit, "
    "many models; writes study.json and a self-contained study.html with a computed verdict per claim"
)


def add_parser(cmds: argparse._SubParsersAction) -> None:
    from alignlab.config import add_dataclass_args
    from alignlab.models.cli import add_model_options
    from alignlab.refusal.config import PromptConfig, SelectConfig
    from alignlab.refusal.study_config import StudyConfig

    p = cmds.add_parser("study", help=HELP, description=HELP)
    p.add_argument(
        "models",
        nargs="*",
        default=list(DEFAULT_MODELS),
        metavar="MODEL",
        help=f"models to study, each in its own run directory OUT/<model> (default: {DEFAULT_MODELS[0]})",
    )
    p.add_argument(
        "--out",
        default="runs/study",
        help="study directory: study.json, study.html, and one `refusal run` directory per model "
        "(existing artifacts with the same inputs are reused; a killed study resumes)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer held-out prompts (20 harmful, 24 harmless), response prompts (16, 48 new tokens) and "
        "sweep points (1, 2, 4) unless given; still 128 new tokens per judged response",
    )
    p.add_argument(
        "--reuse",
        action="append",
        default=None,
        metavar="RUN_DIR",
        help="a `refusal run` directory whose data/tokens/extract/select artifacts are copied into the "
        "study's run directory for the same model (used only where their keys match; repeatable; "
        "default: runs/demo when it exists)",
    )
    p.add_argument(
        "--fallback-template",
        action="store_true",
        help="use 'User: ...\\n\\nAssistant:' when the tokenizer has no chat template",
    )
    add_model_options(p)
    add_dataclass_args(p, StudyConfig)
    add_dataclass_args(p, PromptConfig)
    add_dataclass_args(p, SelectConfig)
    p.set_defaults(func=_study)


def config_from_args(args: argparse.Namespace):
    from pathlib import Path

    from alignlab.config import from_args
    from alignlab.refusal.config import PromptConfig, SelectConfig
    from alignlab.refusal.study import StudyRun
    from alignlab.refusal.study_config import QUICK_PROMPTS, QUICK_STUDY, StudyConfig, unset_defaults
    from alignlab.refusal.study_reuse import check_reuse

    given = vars(args)
    reuse = tuple(Path(p) for p in args.reuse) if args.reuse is not None else None
    check_reuse(reuse or ())
    quick_study = unset_defaults(QUICK_STUDY, given) if args.quick else {}
    quick_prompts = unset_defaults(QUICK_PROMPTS, given) if args.quick else {}
    return StudyRun(
        models=tuple(args.models),
        out=Path(args.out),
        study=from_args(StudyConfig, args, **quick_study),
        prompts=from_args(PromptConfig, args, **quick_prompts),
        select=from_args(SelectConfig, args),
        quick=args.quick,
        device=args.device,
        dtype=args.dtype,
        chat_template=args.chat_template,
        fallback_template=args.fallback_template,
        allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code,
        reuse=reuse,
    )


def _study(args: argparse.Namespace) -> int:
    from alignlab.refusal.study import run_study

    study = run_study(config_from_args(args))
    print(f"{'model':<28} {'claim':<52} verdict")
    for slug, m in study["models"].items():
        for claim in m["claims"].values():
            print(f"{slug:<28} {claim['title']:<52} {claim['verdict']}")
    mm = study["many_models"]
    print(f"{'all':<28} {mm['title']:<52} {mm['verdict']}")
    print(f"study: {args.out}/study.html  ({args.out}/study.json; {study['wall_s']:.0f} s)")
    return 0
