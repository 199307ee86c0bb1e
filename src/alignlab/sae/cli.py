"""``alignlab sae cache | train | eval | inspect``: activations to disk, SAE training, evaluation, dashboards.

Only argparse/stdlib are imported at module level; torch and the SAE code load inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from alignlab.sae.train_args import preset_train_fields, sae_schedule_fields, schedule_options

ARCH_ALIASES = {"standard": "standard_bricken", "bricken": "standard_bricken", "april": "standard_april"}


def _model_options(p: argparse.ArgumentParser, model_default: str | None = None) -> None:
    p.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: best available)")
    p.add_argument("--dtype", default=None, help="LM dtype float32/bfloat16 (default: bf16 on CUDA, fp32 on CPU)")


def _text_options(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--text", default=None, metavar="SRC",
                   help="text source: .txt, .jsonl, a directory or hf:<name> (default: the offline Python corpus)")
    p.add_argument("--split", default=split, choices=("train", "eval", "all"),
                   help=f"document split of the text (by content hash; default: {split})")
    p.add_argument("--eval-frac", type=float, default=0.05, help="fraction of documents held out for eval (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="document order / shuffle seed (default 0)")
    p.add_argument("--context-size", type=int, default=128, help="tokens per context window (default 128)")
    p.add_argument("--prepend-bos", action=argparse.BooleanOptionalAction, default=None,
                   help="start each window with BOS (default: whenever the tokenizer has one); the first position is never kept")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sae", help="sparse autoencoders: cache activations, train, evaluate, inspect")
    p.set_defaults(group_parser=p)
    cmds = p.add_subparsers(dest="sae_cmd", metavar="COMMAND")

    c = cmds.add_parser("cache", help="run a model up to a hook and write its activations to disk (resumable)")
    c.add_argument("model", help="embedded name (smollm2-135m-instruct), HF id, directory or .gguf")
    c.add_argument("--layer", type=int, required=True, help="block index (negative counts from the end)")
    c.add_argument("--hook", default="resid_post", help="resid_post | resid_pre | attn_out | mlp_out (default resid_post)")
    c.add_argument("--tokens", type=int, required=True, help="activation rows to cache")
    c.add_argument("--out", required=True, help="cache directory (rerun with the same settings to resume)")
    c.add_argument("--batch-contexts", type=int, default=32, help="contexts per LM forward (default 32)")
    c.add_argument("--cache-dtype", default="bfloat16", choices=("bfloat16", "float32", "float16"),
                   help="stored dtype (default bfloat16)")
    c.add_argument("--shard-rows", type=int, default=65_536, help="rows per shard file (default 65536)")
    _text_options(c, "train")
    _model_options(c)
    c.set_defaults(func=_cmd_cache)

    c = cmds.add_parser("train", help="train one or several SAEs from one cached activation stream")
    c.add_argument("acts", help="activation cache directory (from `alignlab sae cache`)")
    c.add_argument("--arch", action="append", default=None,
                   help="preset: gated, standard (=standard_bricken), standard_april, topk, batchtopk, jumprelu, "
                   "matryoshka, lp, ... (repeat for several SAEs; default gated)")
    c.add_argument("--width", type=float, default=16, help="expansion factor d_sae / d (default 16)")
    c.add_argument("--d-sae", type=int, default=None, help="dictionary width (overrides --width)")
    c.add_argument("--l1", type=float, nargs="+", default=None,
                   help="sparsity coefficients; every arch is trained at each (default: the preset's)")
    c.add_argument("--k", type=int, default=None, help="active latents for the TopK family (default: preset)")
    c.add_argument("--normalize", default=None, choices=("none", "expected_average_only_in", "unit_mean_sq"),
                   help="dataset-level input normalisation (default: preset)")
    c.add_argument("--steps", type=int, default=1000, help="optimiser steps (default 1000)")
    c.add_argument("--batch-size", type=int, default=4096, help="tokens per step (default 4096)")
    c.add_argument("--lr", type=float, default=None, help="Adam LR (default: preset)")
    c.add_argument("--lr-warmup", type=int, default=None, help="LR warm-up steps (default min(1000, steps/10))")
    c.add_argument("--buffer-rows", type=int, default=1_000_000, help="shuffle buffer rows (default 1e6)")
    c.add_argument("--log-every", type=int, default=50, help="steps between log records (default 50)")
    c.add_argument("--checkpoint-every", type=int, default=0, help="checkpoint every N steps (default: end only)")
    c.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    c.add_argument("--seed", type=int, default=0, help="data order and init seed (default 0)")
    c.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default auto)")
    c.add_argument("--autocast-bf16", action="store_true", help="run SAE matmuls in bf16 (fp32 master weights)")
    c.add_argument("--no-compile", dest="compile", action="store_false",
                   help="keep the gated SAE's elementwise kernels eager on CUDA (default: torch.compile them)")
    c.add_argument("--out", required=True, help="output directory (one SAELens folder per SAE: sae_<i>)")
    c.add_argument("--ddp", action="store_true",
                   help="require a DDP launch: torchrun --nproc-per-node N -m alignlab sae train ... (under torchrun "
                   "DDP is on anyway; each process reads its own shards and --batch-size / N rows per step)")
    schedule_options(c)
    c.set_defaults(func=_cmd_train)

    c = cmds.add_parser("eval", help="L0, FVU, MSE, CE recovered, delta LM loss, KL, dead/dense, shrinkage")
    c.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="SAELens-format SAE folder(s)")
    c.add_argument("--model", default=None, help="model (default: the one recorded in the SAE config)")
    c.add_argument("--layer", type=int, default=None, help="hook layer (default: recorded in the SAE config)")
    c.add_argument("--tokens", type=int, default=None, help="held-out tokens (default: 2^20 on CUDA, 2^15 on CPU)")
    c.add_argument("--batch-contexts", type=int, default=8, help="contexts per LM forward (default 8)")
    c.add_argument("--json", action="store_true", help="print one JSON object (a list for several SAEs)")
    c.add_argument("--markdown", action="store_true", help="print a markdown table")
    c.add_argument("--out", default=None, help="also write the JSON results to this file")
    c.add_argument("--write-sparsity", action="store_true",
                   help="write sparsity.safetensors (log10 feature density) into each SAE folder")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    _text_options(c, "eval")
    _model_options(c)
    c.set_defaults(func=_cmd_eval)

    c = cmds.add_parser("inspect", help="top contexts, histograms, logit effects -> self-contained HTML dashboard")
    c.add_argument("checkpoint", help="SAELens-format SAE folder")
    c.add_argument("--out", required=True, help="dashboard .html path")
    c.add_argument("--model", default=None, help="model (default: the one recorded in the SAE config)")
    c.add_argument("--layer", type=int, default=None, help="hook layer (default: recorded in the SAE config)")
    c.add_argument("--tokens", type=int, default=32_768, help="tokens to scan (default 32768)")
    c.add_argument("--batch-contexts", type=int, default=16, help="contexts per LM forward (default 16)")
    c.add_argument("--latents", type=int, default=50, help="latents given a detail section (default 50)")
    c.add_argument("--top-k", type=int, default=20, help="top contexts kept per latent (default 20)")
    c.add_argument("--window", type=int, default=8, help="tokens shown either side of an activation (default 8)")
    c.add_argument("--direction", default=None, metavar="FILE",
                   help="safetensors/.npy direction, [d] or [n_pos, n_layers, d] (e.g. from `alignlab refusal`)")
    c.add_argument("--direction-key", default=None, help="tensor name inside the safetensors file")
    c.add_argument("--direction-layer", type=int, default=None, help="layer of a [n_pos, n_layers, d] direction")
    c.add_argument("--direction-pos", type=int, default=-1, help="position of a [n_pos, n_layers, d] direction")
    c.add_argument("--force", action="store_true", help="accept a direction recorded at another hook/layer")
    c.add_argument("--bundle", default=None, help="also write the scan as safetensors + JSON to this directory")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    _text_options(c, "eval")
    _model_options(c)
    c.set_defaults(func=_cmd_inspect)
    from alignlab.sae.cli_interop import register_interop  # export, convert (spec §6)

    register_interop(cmds)
    from alignlab.sae.study_cli import register_study  # study (issue 17)

    register_study(cmds)


def _load_lm(spec: str, args: argparse.Namespace):
    from alignlab.sae.activations import load_lm

    return load_lm(spec, args.device, args.dtype)


def _texts(args: argparse.Namespace):
    from alignlab.sae.activations import corpus

    return corpus(args.text, seed=args.seed, part=args.split, eval_frac=args.eval_frac)


def _check_text_args(args: argparse.Namespace) -> None:
    """Refuse bad counts and fractions before a model is loaded (issue 12: no hang, no silent empty run)."""
    from alignlab.errors import AlignlabError
    from alignlab.sae.activations import check_eval_frac

    check_eval_frac(args.eval_frac, args.split)
    for flag in ("batch_contexts", "shard_rows", "tokens"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise AlignlabError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")


def _check_out_file(path: str, flag: str = "--out") -> None:
    """A file output: not an existing directory, and its folder can be created and written."""
    from alignlab.errors import AlignlabError
    from alignlab.io import ensure_dir

    if Path(path).is_dir():
        raise AlignlabError(f"{flag} {path} is an existing directory, not a file: choose another {flag}")
    ensure_dir(Path(path).parent, flag)


def _cmd_cache(args: argparse.Namespace) -> int:
    from alignlab.io import ensure_dir
    from alignlab.sae.activations import ActivationSource, ContextConfig, parse_hook, text_fingerprint
    from alignlab.sae.cache import cache_activations

    _check_text_args(args)
    ensure_dir(args.out)
    lm = _load_lm(args.model, args)
    ctx = ContextConfig(args.context_size, args.prepend_bos, True)
    src = ActivationSource(lm.model, lm.tokenizer, parse_hook(args.hook, args.layer), _texts(args), ctx, args.batch_contexts)
    meta = {"model": args.model, "revision": lm.info.get("revision") if isinstance(lm.info, dict) else None,
            "hook": src.hook.address, "hook_point": src.hook.point, "layer": src.hook.layer,
            "context_size": args.context_size, "prepend_bos": args.prepend_bos, "exclude_special_tokens": True,
            "text_source": args.text, "text_split": args.split,
            "text_fingerprint": text_fingerprint(args.text, args.seed, args.split, args.eval_frac)}
    man = cache_activations(src, args.out, args.tokens, meta=meta, rows_per_shard=args.shard_rows, dtype=args.cache_dtype)
    note = " (the text ran out before --tokens)" if man.get("exhausted") else ""
    if man.get("rebuilt"):
        note += f" (rebuilt {len(man['rebuilt'])} missing or damaged shards: {', '.join(man['rebuilt'])})"
    print(f"cached {man['n_tokens']} activations of {man['hook']} (d={man['d']}, {man['dtype']}) in "
          f"{len(man['shards'])} shards at {args.out}{note}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from alignlab.errors import AlignlabError
    from alignlab.io import ensure_dir
    from alignlab.sae import preset_config
    from alignlab.sae.cache import ActivationCache
    from alignlab.sae.ddp import ddp_from_env, local_batch
    from alignlab.sae.trainer import TrainConfig, train_saes

    cache = ActivationCache(args.acts)
    ensure_dir(args.out)
    man, d = cache.manifest, cache.d
    d_sae = args.d_sae or int(round(args.width * d))
    presets = [ARCH_ALIASES.get(a, a) for a in (args.arch or ["gated"])]
    l1s = args.l1 or [None]
    saes, names, per_sae = [], [], []
    for preset in presets:
        for l1 in l1s:
            fields = {"model": man.get("model", ""), "hook_point": man.get("hook", "resid_post"),
                      "hook_layer": int(man.get("layer", -1)), "context_size": int(man.get("context_size", 128)),
                      "seed": args.seed, "extra": {"dataset_path": str(args.acts), "preset": preset}}
            if l1 is not None:
                fields["l1_coefficient"] = l1
            if args.k is not None:
                fields["k"] = args.k
            if args.normalize is not None:
                fields["normalize_activations"] = args.normalize
            fields.update(sae_schedule_fields(args, preset, d_sae))
            saes.append(_build(preset_config(preset, d, d_sae, **fields)))
            per_sae.append(preset_train_fields(preset, args))
            names.append(f"{preset}" + (f"_l1={l1:g}" if l1 is not None else ""))
    warm = args.lr_warmup if args.lr_warmup is not None else min(1000, args.steps // 10)
    ddp = ddp_from_env(args.ddp, args.device)  # under torchrun: this rank's share of every batch and shard
    rank, world = (ddp.rank, ddp.world) if ddp else (0, 1)
    cfg = TrainConfig(total_steps=args.steps, batch_size=local_batch(args.batch_size, world), lr_warmup_steps=warm,
                      device=ddp.device if ddp else args.device, seed=args.seed, log_every=args.log_every,
                      checkpoint_every=args.checkpoint_every, autocast_bf16=args.autocast_bf16,
                      compile_kernels=args.compile)
    if cache.n_tokens < args.batch_size:
        raise AlignlabError(f"the cache holds {cache.n_tokens} rows, fewer than one batch of {args.batch_size}")
    batches = cache.batches(cfg.batch_size, seed=args.seed, buffer_rows=args.buffer_rows, rank=rank, world=world)
    results = train_saes(saes, batches, cfg, out_dir=args.out, resume=args.resume, progress=True, per_sae=per_sae)
    for name, res in zip(names, results if rank == 0 else []):
        m = res.metrics
        print(f"{name:<28} -> {res.path}  L0 {m.get('l0', float('nan')):.1f}  FVU {m.get('fvu', float('nan')):.4f}")
    return 0


def _build(cfg):
    from alignlab.sae import build_sae

    return build_sae(cfg)


def _load_saes(paths: list[str]):
    from alignlab.errors import AlignlabError
    from alignlab.sae import load_sae

    saes = [load_sae(p) for p in paths]
    first = saes[0].cfg
    for p, s in zip(paths[1:], saes[1:]):
        if (s.cfg.hook_point, s.cfg.hook_layer, s.cfg.d_in) != (first.hook_point, first.hook_layer, first.d_in):
            raise AlignlabError(f"{p} reads another hook than {paths[0]}; evaluate SAEs of different hooks separately")
    return saes


def _model_for(args: argparse.Namespace, cfg) -> str:
    from alignlab.errors import AlignlabError

    spec = args.model or cfg.model
    if not spec:
        raise AlignlabError("the SAE config records no model; pass --model")
    return spec


def _cmd_eval(args: argparse.Namespace) -> int:
    from alignlab.io import save_tensors_atomic, write_json_atomic
    from alignlab.sae.activations import hook_of_sae
    from alignlab.sae.evaluate import SPEC_MIN_TOKENS, EvalConfig, evaluate_saes, format_table, json_ready

    _check_text_args(args)
    if args.out:
        _check_out_file(args.out)
    saes = _load_saes(args.checkpoints)
    lm = _load_lm(_model_for(args, saes[0].cfg), args)
    from alignlab.models.anatomy import map_model

    hook = hook_of_sae(saes[0].cfg, map_model(lm.model).n_layers, args.layer)
    cfg = EvalConfig(tokens=args.tokens, context_size=args.context_size, batch_contexts=args.batch_contexts,
                     text=args.text, split=args.split, eval_frac=args.eval_frac, seed=args.seed,
                     prepend_bos=args.prepend_bos)
    results = evaluate_saes(lm.model, lm.tokenizer, saes, hook, _texts(args), cfg, names=args.checkpoints,
                            progress=not args.no_progress)
    if results[0]["n_tokens"] < SPEC_MIN_TOKENS:
        print(f"alignlab: note: evaluated on {results[0]['n_tokens']} tokens; spec §5 asks for >= {SPEC_MIN_TOKENS} "
              "(pass --tokens)", file=sys.stderr)
    if args.write_sparsity:
        for path, r in zip(args.checkpoints, results):
            save_tensors_atomic(Path(path) / "sparsity.safetensors", {"sparsity": r["log10_feature_density"]})
    clean = [{**json_ready(r), "model": lm.spec} for r in results]
    if args.out:
        write_json_atomic(args.out, clean[0] if len(clean) == 1 else clean)
    if args.json:
        print(json.dumps(clean[0] if len(clean) == 1 else clean))
    elif args.markdown:
        print(format_table(results, "markdown"))
    else:
        print(format_table(results, "text"))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from alignlab.io import ensure_dir
    from alignlab.sae.inspect import InspectConfig, run_inspect

    _check_text_args(args)
    _check_out_file(args.out)
    if args.bundle:
        ensure_dir(args.bundle, "--bundle")
    sae = _load_saes([args.checkpoint])[0]
    lm = _load_lm(_model_for(args, sae.cfg), args)
    cfg = InspectConfig(tokens=args.tokens, batch_contexts=args.batch_contexts, context_size=args.context_size,
                        prepend_bos=args.prepend_bos, latents=args.latents, top_k=args.top_k, window=args.window,
                        direction=args.direction, direction_key=args.direction_key,
                        direction_layer=args.direction_layer, direction_pos=args.direction_pos, force=args.force)
    summary = run_inspect(lm.model, lm.tokenizer, sae, _texts(args), cfg, out_html=args.out, bundle=args.bundle,
                          layer=args.layer, progress=not args.no_progress, title=str(args.checkpoint))
    print(f"wrote {args.out} ({summary['n_tokens']} tokens scanned, {summary['shown']} latents detailed"
          + (f", top cosine latent {summary['top_cos_latent']} ({summary['top_cos']:.3f})" if "top_cos" in summary else "")
          + ")")
    return 0
