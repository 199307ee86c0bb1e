"""`alignlab models ...`: inspect a model's structure."""

from __future__ import annotations

import argparse
import json


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that loads a model."""
    parser.add_argument("--device", default=None, help="cuda, mps, cpu or auto (default: best available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--allow-pickle", action="store_true", help="allow .bin/.pt pickle weights (can run code)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run model code from the repository")
    parser.add_argument("--chat-template", default=None, metavar="FILE", help="Jinja chat template to use")


def load_from_args(args: argparse.Namespace):
    from alignlab.models.loading import load_model

    return load_model(
        args.model,
        device=args.device,
        dtype=args.dtype,
        allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code,
        chat_template=args.chat_template,
    )


def _info(args: argparse.Namespace) -> int:
    from alignlab.models.anatomy import map_model

    loaded = load_from_args(args)
    anatomy = map_model(loaded.model)
    data = anatomy.to_dict()
    data["source"] = loaded.source
    if args.json:
        print(json.dumps(data))
        return 0
    print(f"model      {args.model}  ({data['family']}, {data['n_layers']} blocks, d_model {data['d_model']})")
    print(f"embedding  {data['embedding']}" + (f" + {data['position_embedding']}" if data["position_embedding"] else ""))
    print(f"final norm {data['final_norm']}")
    print(f"unembed    {data['unembedding']}  tied={data['tied_embeddings']}")
    print(f"norms      {data['norm_placement']}")
    print(f"{'block':>5}  {'writers':<60} norms")
    for i, (writers, norms) in enumerate(zip(data["writers"], data["norms"])):
        short = [w.split(".", 3)[-1] if w.count(".") >= 3 else w for w in writers]
        norm_text = ", ".join(f"{n.rsplit('.', 1)[-1]}={p}" for n, p in norms.items())
        print(f"{i:>5}  {', '.join(short):<60} {norm_text}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="inspect models: anatomy map, writers, norms")
    p.set_defaults(group_parser=p)
    cmds = p.add_subparsers(dest="command", metavar="COMMAND")
    info = cmds.add_parser("info", help="print the structural map of a model (residual writers, norms, head)")
    info.add_argument("model", help="embedded name (smollm2-135m-instruct), HF id, directory or .gguf file")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_options(info)
    info.set_defaults(func=_info)
