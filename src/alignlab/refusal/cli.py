"""`alignlab refusal ...`: run the pipeline, or one stage of it, and use a direction interactively."""

from __future__ import annotations

import argparse
import sys

DEFAULT_MODEL = "smollm2-135m-refusal"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    from alignlab.config import add_dataclass_args
    from alignlab.models.cli import add_model_options
    from alignlab.refusal.config import EditConfig, EvalConfig, PromptConfig, SelectConfig, SubspaceConfig
    from alignlab.refusal.search_space import SearchConfig

    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"embedded name, HF id, directory or .gguf (default: {DEFAULT_MODEL})")
    p.add_argument("--out", default="runs/refusal", help="run directory (artifacts; reused to resume)")
    p.add_argument("--fallback-template", action="store_true",
                   help="use 'User: ...\\n\\nAssistant:' when the tokenizer has no chat template")
    p.add_argument("--no-export", action="store_true", help="do not save the edited model")
    p.add_argument("--export-gguf", action="store_true",
                   help="also write RUN/model.gguf (llama family, F16) and verify it by reading it back")
    p.add_argument("--export-lora", action="store_true",
                   help="also write RUN/adapter: the edit as a rank-1 PEFT LoRA adapter for the unedited model "
                   "(PeftModel.from_pretrained), verified against the merged edit; needs `pip install peft`")
    add_model_options(p)
    add_dataclass_args(p, PromptConfig)
    add_dataclass_args(p, SelectConfig)
    add_dataclass_args(p, EditConfig)
    add_dataclass_args(p, EvalConfig, prefix="eval-")
    add_dataclass_args(p, SearchConfig, prefix="search-")
    add_dataclass_args(p, SubspaceConfig, prefix="subspace-")
    p.add_argument("--select", dest="method", choices=("auto", "rd", "search", "cosmic"), default="auto",
                   help="auto: RD's pick when a candidate passes --kl-max/--induce-min, else the refusal/KL "
                   "search; rd: RD only (error when nothing passes); search: always search; cosmic: COSMIC's "
                   "activation-cosine choice, no output-based score (default: auto)")


def _config(args: argparse.Namespace, stop_after: str | None):
    from pathlib import Path

    from alignlab.config import from_args
    from alignlab.refusal.config import EditConfig, EvalConfig, PromptConfig, SelectConfig, SubspaceConfig
    from alignlab.refusal.pipeline import RunConfig
    from alignlab.refusal.search_space import SearchConfig

    return RunConfig(
        model=args.model, out=Path(args.out), prompts=from_args(PromptConfig, args),
        select=from_args(SelectConfig, args), edit=from_args(EditConfig, args),
        eval=from_args(EvalConfig, args, prefix="eval-"), search=from_args(SearchConfig, args, prefix="search-"),
        subspace=from_args(SubspaceConfig, args, prefix="subspace-"),
        method="search" if stop_after == "search" else args.method, device=args.device, dtype=args.dtype,
        chat_template=args.chat_template, fallback_template=args.fallback_template,
        export=not args.no_export, export_gguf=args.export_gguf, export_lora=args.export_lora, stop_after=stop_after,
        allow_pickle=args.allow_pickle, trust_remote_code=args.trust_remote_code,
    )


def _run(stop_after: str | None):
    def handler(args: argparse.Namespace) -> int:
        from alignlab.refusal.run import run_pipeline

        report = run_pipeline(_config(args, stop_after))
        out = args.out
        if not report:
            print(f"stages up to {stop_after} done; artifacts in {out}")
            return 0
        from alignlab.refusal.report_search import selected_line

        rates = report["refusal_rate"]
        print(selected_line(report))
        print(f"{'condition':<10} {'harmful':>8} {'harmless':>9}")
        for cond in ("base", "ablated", "edited", "added"):
            r = rates.get(cond, {})
            print(f"{cond:<10} {r.get('harmful', float('nan')):>8.2f} {r.get('harmless', float('nan')):>9.2f}")
        print(f"edit max |Δlogit| vs hooks: {report['edit_max_abs_logit_diff']:.2e}  "
              f"(exact: {report['exact_equivalence']})")
        adapter = (report.get("export") or {}).get("adapter")
        if adapter:
            print(f"LoRA adapter: {adapter}  (max |Δlogit| vs the merged edit: "
                  f"{report['export']['adapter_max_abs_logit_diff']:.1e})")
        print(f"report: {out}/report.html  ({out}/report.json)")
        return 0

    return handler


def _check_ablate_args(args: argparse.Namespace) -> None:
    """Every meaningless or conflicting option is an error before the model loads."""
    import math

    from alignlab.errors import AlignlabError

    if args.max_new_tokens < 1:
        raise AlignlabError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if not math.isfinite(args.coeff):
        raise AlignlabError(f"--coeff must be a finite number, got {args.coeff}")
    if not args.add and (args.layer is not None or args.coeff != 1.0):
        raise AlignlabError("--layer and --coeff apply only with --add (ablation acts on every layer): add --add "
                            "or drop them")
    if args.add and args.layer is None:
        raise AlignlabError("--add needs --layer (the selected layer is in RUN/selection.json)")


def _read_direction(path: str):
    from safetensors.torch import load_file

    from alignlab.errors import AlignlabError

    try:
        tensors = load_file(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise AlignlabError(f"cannot read direction file {path}: expected a safetensors file "
                            "(e.g. RUN/direction.safetensors)") from exc
    if "directions" in tensors:  # RUN/subspace.safetensors: [k, d_model], ablated together
        direction = tensors["directions"].float()
        if direction.ndim != 2 or direction.shape[0] < 1:
            raise AlignlabError(f"{path}: 'directions' must be [k, d_model], got shape {list(direction.shape)}")
    elif "direction" not in tensors:
        raise AlignlabError(f"{path} has no 'direction' tensor (nor a subspace's 'directions')")
    else:
        direction = tensors["direction"].float()  # [d_model]
        if direction.ndim != 1:
            raise AlignlabError(f"{path}: 'direction' must be a vector [d_model], got shape {list(direction.shape)}")
    if not bool(direction.isfinite().all()):
        raise AlignlabError(f"{path}: the direction holds NaN or infinite values; recompute it")
    if float(direction.norm()) == 0.0:
        raise AlignlabError(f"{path}: the direction is all zeros (ablating or adding it does nothing)")
    return direction


def _ablate(args: argparse.Namespace) -> int:
    from alignlab.errors import AlignlabError
    from alignlab.models.anatomy import map_model
    from alignlab.models.chat import chat_format, check_context
    from alignlab.models.cli import load_from_args
    from alignlab.models.generate import generate_greedy
    from alignlab.refusal.intervene import ablate, ablate_subspace, add_direction

    _check_ablate_args(args)
    direction = _read_direction(args.direction)
    lm = load_from_args(args)
    anatomy = map_model(lm.model)
    if direction.shape[-1] != anatomy.d_model:
        raise AlignlabError(f"{args.direction} has d_model {direction.shape[-1]} but the model has "
                            f"{anatomy.d_model}: use a direction computed on this model")
    fmt = chat_format(lm.tokenizer, args.system_prompt)
    if args.prompt:
        check_context(fmt, lm.model, {"--prompt": [args.prompt]}, args.max_new_tokens)
    if args.add:
        if not 0 <= args.layer < anatomy.n_layers:
            raise AlignlabError(f"--layer must be in [0, {anatomy.n_layers - 1}] for this model, got {args.layer}")
        first = direction if direction.ndim == 1 else direction[0]  # a subspace adds its first direction
        context = lambda: add_direction(lm.model, first, args.layer, args.coeff)  # noqa: E731
    elif direction.ndim == 2:
        context = lambda: ablate_subspace(lm.model, direction)  # noqa: E731
    else:
        context = lambda: ablate(lm.model, direction)  # noqa: E731
    prompts = [args.prompt] if args.prompt else None
    while True:
        batch = prompts or [input("you> ").strip()]
        if not batch[0]:
            return 0
        with context():
            reply = generate_greedy(lm.model, fmt, batch, args.max_new_tokens, 1, progress=False)[0]
        print(reply.text)
        if prompts or not sys.stdin.isatty():
            return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refusal", help="find, ablate, add and bake in the refusal direction")
    p.set_defaults(group_parser=p)
    cmds = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, stop, text in (
        ("run", None, "all stages: data, tokens, extract, select, edit, evaluate, export, report"),
        ("extract", "extract", "difference-of-means candidates at every layer and post-instruction position"),
        ("select", "select", "extract + select the direction (bypass / induce / KL)"),
        ("search", "search", "extract + search ablation weights and direction for the refusal/KL trade-off "
                             "(Optuna TPE, resumable; Pareto points confirmed by generation)"),
        ("edit", "edit", "... + orthogonalise the weights and measure the gap to hook ablation"),
        ("evaluate", None, "... + held-out generations, rates, KL/CE, export and report (same as run)"),
    ):
        c = cmds.add_parser(name, help=text, description=text)
        _add_run_options(c)
        c.set_defaults(func=_run(stop))
    from alignlab.refusal.study_cli import add_parser as add_study_parser

    add_study_parser(cmds)
    a = cmds.add_parser("ablate", help="chat with the direction ablated (or added)")
    a.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    a.add_argument("--direction", required=True, help="direction.safetensors from a run directory (or "
                   "subspace.safetensors: its directions are ablated together)")
    a.add_argument("--prompt", default=None, help="one prompt (default: interactive chat)")
    a.add_argument("--add", action="store_true", help="add the direction instead of ablating it")
    a.add_argument("--layer", type=int, default=None, help="layer for --add")
    a.add_argument("--coeff", type=float, default=1.0, help="coefficient for --add")
    a.add_argument("--system-prompt", default=None)
    a.add_argument("--max-new-tokens", type=int, default=128)
    from alignlab.models.cli import add_model_options

    add_model_options(a)
    a.set_defaults(func=_ablate)
