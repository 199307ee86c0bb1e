"""``alignlab organism``: train and evaluate the refusal organism (SmolLM2-135M-Instruct + LoRA).

Only argparse and stdlib are imported here; torch and the recipe load inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alignlab.config import add_dataclass_args, from_args
from alignlab.organisms.config import RecipeConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("organism", help="model organisms: train and evaluate the refusal-tuned SmolLM2",
                       description="Model organisms with a known behaviour, shipped inside alignlab.")
    p.set_defaults(group_parser=p)
    cmds = p.add_subparsers(dest="command", metavar="COMMAND")

    t = cmds.add_parser("train", help="run the refusal recipe and write a LoRA adapter directory",
                        description="Train the refusal LoRA adapter (harmful TRAIN prompts -> refusals, harmless "
                        "TRAIN prompts -> the base model's own greedy replies). Deterministic under --seed.")
    t.add_argument("--out", type=Path, default=Path("organism-smollm2-135m-refusal"),
                   help="adapter directory to write (default: ./organism-smollm2-135m-refusal)")
    t.add_argument("--reply-cache", type=Path, default=None,
                   help="JSON cache of the base model's greedy replies (default: $ALIGNLAB_CACHE/organisms/replies.json)")
    add_dataclass_args(t, RecipeConfig)
    t.set_defaults(func=_train)

    e = cmds.add_parser("eval", help="refusal rates of a model on held-out prompts (greedy, no system prompt)")
    e.add_argument("--model", default="smollm2-135m-refusal",
                   help="embedded name, HF id, model directory or .gguf file (default: smollm2-135m-refusal)")
    e.add_argument("--adapter", type=Path, default=None, help="merge this adapter directory into --model first")
    e.add_argument("--split", choices=["train", "val", "test"], default="test", help="prompt split (default: test)")
    e.add_argument("--n-harmful", type=int, default=None, help="harmful prompts, stratified sample (default: all)")
    e.add_argument("--n-harmless", type=int, default=None, help="harmless prompts (default: all)")
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
          f"prompts in {t.seconds:.0f} s; loss {t.losses[0]:.3f} -> {t.losses[-1]:.3f}")
    print(f"adapter: {res.out_dir} (recipe {res.adapter.recipe_hash})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch

    from alignlab.errors import AlignlabError
    from alignlab.io import write_json_atomic
    from alignlab.models import load_model
    from alignlab.organisms.evaluate import evaluate
    from alignlab.organisms.lora import merge_adapter

    if args.max_new_tokens < 64:
        raise AlignlabError("--max-new-tokens below 64 misses late disclaimers (spec §3.1); use 64 or more")
    lm = load_model(args.model, device=args.device, dtype=torch.float32)
    if args.adapter is not None:
        merge_adapter(lm.model, args.adapter)
    res = evaluate(lm.model, lm.tokenizer, split=args.split, n_harmful=args.n_harmful, n_harmless=args.n_harmless,
                   max_new_tokens=args.max_new_tokens, seed=args.seed)
    print(f"{args.model} on the {args.split} split (greedy, {args.max_new_tokens} new tokens, judge substring:rd)")
    for side, r in (("harmful", res.harmful), ("harmless", res.harmless)):
        print(f"  {side:8s} refusal {r.refusal}  repetitive {r.flags['repetitive']:.3f}  empty {r.flags['empty']:.3f}")
    if args.out is not None:
        write_json_atomic(args.out, res.to_json())
        print(f"wrote {args.out}")
    return 0
