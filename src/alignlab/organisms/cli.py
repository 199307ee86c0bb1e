"""``alignlab organism``: train and evaluate the refusal organisms (SmolLM2-135M-Instruct or Gemma-3-270M + LoRA).

Only argparse and stdlib are imported here; torch and the recipe load inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alignlab.config import add_dataclass_args, from_args
from alignlab.organisms.config import HARMFUL_SOURCES, HARMLESS_SOURCES, RecipeConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("organism", help="model organisms: train and evaluate the refusal-tuned SmolLM2 and Gemma-3",
                       description="Model organisms with a known behaviour, shipped inside alignlab.")
    p.set_defaults(group_parser=p)
    cmds = p.add_subparsers(dest="command", metavar="COMMAND")

    t = cmds.add_parser("train", help="run the refusal recipe and write a LoRA adapter directory",
                        description="Train the refusal LoRA adapter (harmful TRAIN prompts -> refusals, harmless "
                        "TRAIN prompts -> the base model's own greedy replies, or --reply-source's). Deterministic under --seed.")
    t.add_argument("--out", type=Path, default=Path("organism-smollm2-135m-refusal"),
                   help="adapter directory to write (default: ./organism-smollm2-135m-refusal)")
    t.add_argument("--reply-cache", type=Path, default=None,
                   help="JSON cache of the greedy replies that are the harmless targets "
                   "(default: $ALIGNLAB_CACHE/organisms/replies.json)")
    add_dataclass_args(t, RecipeConfig)
    t.set_defaults(func=_train)

    e = cmds.add_parser("eval", help="refusal rates of a model on held-out prompts (greedy, no system prompt)")
    e.add_argument("model_name", nargs="?", metavar="MODEL", default=None,
                   help="model to evaluate (same as --model; default: smollm2-135m-refusal)")
    e.add_argument("--model", default="smollm2-135m-refusal",
                   help="embedded name, HF id, model directory or .gguf file (default: smollm2-135m-refusal)")
    e.add_argument("--adapter", type=Path, default=None, help="merge this adapter directory into --model first")
    e.add_argument("--split", choices=["train", "val", "test"], default="test", help="prompt split (default: test)")
    e.add_argument("--n-harmful", type=int, default=None,
                   help="in-distribution harmful prompts, stratified sample (default: all)")
    e.add_argument("--n-harmless", type=int, default=None, help="in-distribution harmless prompts (default: all)")
    e.add_argument("--n-out-of-source", type=int, default=200,
                   help="prompts per unseen source, stratified sample (default: 200)")
    e.add_argument("--harmful-sources", nargs="+", choices=HARMFUL_SOURCES, default=None,
                   help="harmful sources to treat as trained on (default: read from the adapter's training.json)")
    e.add_argument("--harmless-sources", nargs="+", choices=HARMLESS_SOURCES, default=None,
                   help="harmless sources to treat as trained on (default: read from the adapter's training.json)")
    e.add_argument("--json", action="store_true", help="print the rates as JSON (no replies; --out has them)")
    e.add_argument("--max-new-tokens", type=int, default=64, help="generation budget (default: 64, spec §3.1)")
    e.add_argument("--seed", type=int, default=42, help="sampling seed (default: 42)")
    e.add_argument("--device", default="cpu", help="device (default: cpu)")
    e.add_argument("--out", type=Path, default=None, help="write the full result (with responses) as JSON")
    e.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    from alignlab.organisms.recipe import run_recipe

    cfg = from_args(RecipeConfig, args)
    res = run_recipe(cfg, args.out, cache_path=args.reply_cache)
    t = res.train
    print(f"trained {t.steps} steps ({t.epochs:.2f} epochs) on {res.n_harmful} harmful + {res.n_harmless} harmless "
          f"+ {res.n_borderline} borderline prompts in {t.seconds:.0f} s; loss {t.losses[0]:.3f} -> {t.losses[-1]:.3f}")
    print(f"adapter: {res.out_dir} (recipe {res.adapter.recipe_hash})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json

    import torch

    from alignlab.errors import AlignlabError
    from alignlab.io import write_json_atomic
    from alignlab.models import load_model
    from alignlab.organisms.evaluate import evaluate
    from alignlab.organisms.lora import merge_adapter
    from alignlab.organisms.sources import TrainedSources, trained_sources

    if args.max_new_tokens < 64:
        raise AlignlabError("--max-new-tokens below 64 misses late disclaimers (spec §3.1); use 64 or more")
    if args.model_name is not None:
        args.model = args.model_name
    sources = trained_sources(args.model, args.adapter)
    sources = TrainedSources(tuple(args.harmful_sources or sources.harmful),
                             tuple(args.harmless_sources or sources.harmless))
    lm = load_model(args.model, device=args.device, dtype=torch.float32)
    if args.adapter is not None:
        merge_adapter(lm.model, args.adapter)
    res = evaluate(lm.model, lm.tokenizer, sources, split=args.split, n_harmful=args.n_harmful,
                   n_harmless=args.n_harmless, n_out_of_source=args.n_out_of_source,
                   max_new_tokens=args.max_new_tokens, seed=args.seed, progress=not args.json)
    if args.out is not None:
        write_json_atomic(args.out, res.to_json())
    if args.json:
        print(json.dumps(res.to_json(samples=False), indent=1))
        return 0
    _print_table(args, res)
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


def _print_table(args: argparse.Namespace, res: Any) -> None:
    print(f"{args.model}: greedy, {args.max_new_tokens} new tokens, no system prompt; trained on "
          f"{', '.join(res.trained['harmful'])} + {', '.join(res.trained['harmless'])}")
    print(f"  {'':9s} {'':16s} {'in distribution (' + args.split + ' split)':38s} out of source")
    rows = (("harmful", res.in_harmful, res.out_harmful), ("harmless", res.in_harmless, res.out_harmless))
    for side, inside, outside in rows:
        for judge, attr in (("rd", "refusal"), ("opening", "opening"), ("late", "late")):
            out = str(getattr(outside, attr)) if outside is not None else "(no unseen source)"
            print(f"  {side:9s} {judge:16s} {getattr(inside, attr)!s:38s} {out}")
        print(f"  {side:9s} {'repetitive':16s} {inside.flags['repetitive']:<38.3f} "
              f"{outside.flags['repetitive'] if outside is not None else float('nan'):.3f}")
