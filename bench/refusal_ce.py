"""Time the evaluation's completion cross-entropy on a real model: padding-free packs vs left-padded 2-row chunks.

The evaluation scores the base model's harmless test completions under every condition (issue 3's CE column).
Here the completions come from a run directory's ``hooked.json`` (``--run``, e.g. the demo's) or, without one,
from greedy generation here. Packs (``refusal/ce_packs.py``) and chunks alternate ``--rounds`` times; prints the
median times, the speed-up and both CE values.

    python bench/refusal_ce.py [--model smollm2-135m-refusal] [--run runs/demo] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-refusal")
    parser.add_argument("--run", default=None, help="take the base harmless completions of this run's hooked.json")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from alignlab.models import load_model
    from alignlab.models.chat import chat_format
    from alignlab.models.generate import generate_greedy
    from alignlab.refusal import evaluate
    from alignlab.refusal.config import EvalConfig, PromptConfig
    from alignlab.refusal.prompts import build_prompt_sets

    torch.manual_seed(0)
    lm = load_model(args.model, device="cpu")
    fmt = chat_format(lm.tokenizer)
    cfg = EvalConfig()
    prompts = build_prompt_sets(PromptConfig()).texts("harmless", "test")
    if args.run:
        gens = json.loads((Path(args.run) / "hooked.json").read_text())["gens"]
        base = next(g for g in gens if g["condition"] == "base" and g["split"] == "harmless")
        prompts, completions = [p if isinstance(p, str) else p[0] for p in base["prompts"]], base["responses"]
    else:
        completions = [r.text for r in generate_greedy(lm.model, fmt, prompts, cfg.max_new_tokens, cfg.batch_size)]
    times: dict[bool, list[float]] = {True: [], False: []}
    values: dict[bool, float] = {}
    for _ in range(args.rounds):
        for packed in (False, True):
            evaluate.PACKED = packed
            t0 = time.perf_counter()
            values[packed] = evaluate.completion_ce(lm.model, fmt, prompts, completions, cfg.batch_size)
            times[packed].append(time.perf_counter() - t0)
    evaluate.PACKED = True
    pad, pack = statistics.median(times[False]), statistics.median(times[True])
    tokens = sum(len(lm.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in completions)
    print(f"model {args.model}: CE of {len(completions)} completions ({tokens} tokens), {torch.get_num_threads()} "
          f"threads, median of {args.rounds} alternating rounds")
    print(f"left-padded chunks {pad:6.1f} s   packs {pack:6.1f} s   ({pad / pack:.2f}x)")
    print(f"CE padded {values[False]:.6f}  packed {values[True]:.6f}  (|diff| {abs(values[True] - values[False]):.1e})")


if __name__ == "__main__":
    main()
