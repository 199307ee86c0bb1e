"""``alignlab data``: list the built-in prompt/text sets and show samples from any of them."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from alignlab.errors import AlignlabError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="built-in prompt sets (harmful/harmless/borderline) and training text")
    p.set_defaults(group_parser=p)
    cmds = p.add_subparsers(dest="data_cmd", metavar="COMMAND")

    c = cmds.add_parser("list", help="table of the built-in sets: name, count, categories, source")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=_cmd_list)

    c = cmds.add_parser("show", help="print prompts from a built-in set or a prompt file")
    c.add_argument("name", help="harmful, harmbench, donotanswer, harmless, borderline, python-text, "
                   "or a prompt file / hf:<name> spec")
    c.add_argument("--n", type=int, default=10, help="how many to show (default 10; 0 = all)")
    c.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="show only this hash split (spec §2.1: train u<0.5, val u<0.7, else test)")
    c.add_argument("--seed", type=int, default=None,
                   help="show a seeded sample instead of the first N in file order")
    c.add_argument("--category", default=None, help="show only this category")
    c.add_argument("--json", action="store_true", help="one JSON object per line (text, category, source)")
    c.set_defaults(func=_cmd_show)


def _cmd_list(args: argparse.Namespace) -> int:
    from alignlab.data.registry import describe_all

    rows = describe_all()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [("name", "count", "categories", "source")]
    table += [(r["name"], str(r["count"]), _cats(r["categories"]), r["source"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    return 0


def _cats(cats: dict[str, int], limit: int = 60) -> str:
    """``"6: a, b, c, ..."`` truncated to ``limit`` characters."""
    if not cats:
        return "-"
    text = f"{len(cats)}: " + ", ".join(cats)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cmd_show(args: argparse.Namespace) -> int:
    from alignlab.data.registry import TEXT_SET, show_prompts, show_texts

    if args.n < 0:
        raise AlignlabError(f"--n must be 0 (all) or a positive count, got {args.n}")
    n = None if args.n == 0 else args.n
    if args.name == TEXT_SET:
        for i, text in enumerate(show_texts(n, seed=args.seed or 0)):
            if args.json:
                print(json.dumps({"text": text, "source": "python:stdlib"}))
            else:
                print(f"--- document {i + 1} ({len(text)} chars)\n{text[:400]}")
        return 0
    prompts = show_prompts(args.name, n=n, split=args.split, seed=args.seed, category=args.category)
    for p in prompts:
        if args.json:
            print(json.dumps({"text": p.text, "category": p.category, "source": p.source}))
        else:
            print(f"[{p.category}] {p.text}")
    if not args.json:
        counts = Counter(p.category for p in prompts)
        print(f"({len(prompts)} shown; {len(counts)} categories)", file=sys.stderr)
    return 0
