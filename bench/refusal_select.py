"""Time direction selection on a real model: screened selection vs naive full scoring, same run.

Prints candidates/s for both and the speed-up; and the selection as it runs now (the chat template's shared
prefix once per forward, bfloat16 screening where the CPU has it: issue 19 §2) against full left-padded float32
forwards, with whether both pick the same candidate from the same finalists. Naive scoring (every candidate on the whole val set,
RD's rule) is timed on ``--naive-sample`` candidates and extrapolated, so the bench stays short.

    python bench/refusal_select.py [--model smollm2-135m-refusal] [--naive-sample 12]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

import torch


def finalists(sel) -> set[tuple[int, int]]:
    return {(c.position, c.layer) for c in sel.candidates if c.stage == "full"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-refusal")
    parser.add_argument("--naive-sample", type=int, default=12, help="candidates timed naively (0: skip)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--kl-max", type=float, default=0.5, help="KL bound (the 135M default needs ~0.5)")
    parser.add_argument("--run", default=None, help="reuse tokens.json + directions.safetensors of a run dir")
    args = parser.parse_args()

    from alignlab.models import load_model
    from alignlab.models.chat import chat_format
    from alignlab.refusal.config import PromptConfig, SelectConfig
    from alignlab.refusal.directions import extract_directions
    from alignlab.refusal.forward import logprobs_for
    from alignlab.refusal.prompts import build_prompt_sets
    from alignlab.refusal.score import calibrate_refusal_tokens
    from alignlab.refusal.select import Candidate, _Scorer, select_direction

    torch.manual_seed(0)
    lm = load_model(args.model, device=args.device)
    fmt = chat_format(lm.tokenizer)
    sets = build_prompt_sets(PromptConfig())
    t0 = time.perf_counter()
    if args.run:
        import json
        from pathlib import Path

        from safetensors.torch import load_file

        ids = json.loads((Path(args.run) / "tokens.json").read_text())["ids"]
        r = load_file(str(Path(args.run) / "directions.safetensors"))["r"]
    else:
        tokens = calibrate_refusal_tokens(fmt, logprobs_for(lm.model, fmt, sets.texts("harmful", "train")[:64], 32),
                                          logprobs_for(lm.model, fmt, sets.texts("harmless", "train")[:64], 32))
        ids = list(tokens.ids)
        r = extract_directions(lm.model, fmt, sets.texts("harmful", "train"), sets.texts("harmless", "train"), ids).r
    t_extract = time.perf_counter() - t0
    cfg = SelectConfig(kl_max=args.kl_max)
    n_pos, n_layers, _ = r.shape
    n_candidates = n_pos * int(n_layers * (1 - cfg.prune_frac))

    from alignlab.models import prefix_split

    def timed_select():
        t0 = time.perf_counter()
        out = select_direction(lm.model, fmt, r, sets.texts("harmful", "val"), sets.texts("harmless", "val"), ids,
                               cfg)
        return out, time.perf_counter() - t0

    fast_cfg = cfg
    prefix_split.ENABLED = False  # baseline: every forward runs the whole left-padded batch, in float32
    cfg = dataclasses.replace(fast_cfg, screen_bf16=False)
    sel_full, t_full = timed_select()
    prefix_split.ENABLED = True  # the template's shared prefix runs once per forward (issue 19 §2) ...
    cfg = fast_cfg  # ... and screening uses bfloat16 matmuls where the CPU has them
    sel, t_select = timed_select()
    same = (sel.chosen.position, sel.chosen.layer) == (sel_full.chosen.position, sel_full.chosen.layer)
    worst = max((abs(a.bypass - b.bypass) for a, b in zip(sel.candidates, sel_full.candidates)
                 if a.stage == b.stage == "full"), default=float("nan"))

    t_naive = t_naive_each = float("nan")
    if args.naive_sample:
        scorer = _Scorer(lm.model, fmt, sets.texts("harmful", "val"), sets.texts("harmless", "val"), ids, 32)
        rng = random.Random(0)
        live = [(p - n_pos, layer) for layer in range(int(n_layers * (1 - cfg.prune_frac))) for p in range(n_pos)]
        sample = rng.sample(live, min(args.naive_sample, len(live)))
        t0 = time.perf_counter()
        for pos, layer in sample:
            scorer.score(Candidate(pos, layer), r)
        t_naive_each = (time.perf_counter() - t0) / len(sample)
        t_naive = t_naive_each * n_candidates

    print(f"model {args.model}: {n_layers} layers x {n_pos} positions, {n_candidates} live candidates")
    print(f"tokens+extract: {t_extract:.1f} s")
    print(f"screened selection: {t_select:.1f} s  ({n_candidates / t_select:.2f} candidates/s), "
          f"chosen layer {sel.chosen.layer} pos {sel.chosen.position}, {sel.forwards} forwards, "
          f"{sel.generates} generate calls")
    from alignlab.models.precision import bf16_fast

    bf16 = bf16_fast(next(lm.model.parameters()).device)
    print(f"full-batch float32 forwards (shared prefix off, bf16 screening off): {t_full:.1f} s, chosen layer "
          f"{sel_full.chosen.layer} pos {sel_full.chosen.position}; shared prefix on + bf16 screening "
          f"({'used' if bf16 else 'not available here'}): {t_select:.1f} s; same pick: {same}; same finalists: "
          f"{finalists(sel) == finalists(sel_full)}; max |bypass difference| over fully scored candidates "
          f"{worst:.2e}")
    print(f"speedup={t_full / t_select:.2f}")
    if not args.naive_sample:
        return
    print(f"naive full scoring: {t_naive_each:.2f} s/candidate -> {t_naive:.1f} s for all "
          f"({1 / t_naive_each:.2f} candidates/s; prefix cache used for induce in both)")
    print(f"speedup_vs_naive={t_naive / t_select:.2f}")


if __name__ == "__main__":
    main()
