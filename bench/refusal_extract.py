"""Time the tokens and extract stages on a real model: padding-free packs vs left-padded forwards, same run.

Both stages forward the train prompts once (tokens: 64 + 64 for the refusal-token calibration; extract: every
train prompt, activations at the post-instruction positions of every layer). Since issue 19's fourth round they
run on ``models.packing``'s packs (the chat template's shared prefix once per pack, no padding); the baseline
turns packing off (``prefix_split.ENABLED = False``: the left-padded batches of before). The two alternate
``--rounds`` times and the bench prints the median times, the speed-up, and how far the packed results are
from the padded ones (same refusal tokens; largest difference of the candidate directions, relative to their
norm; cosine of each candidate with its padded twin).

    python bench/refusal_extract.py [--model smollm2-135m-refusal] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-refusal")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from alignlab.models import load_model, prefix_split
    from alignlab.models.chat import chat_format
    from alignlab.refusal.config import PromptConfig, SelectConfig
    from alignlab.refusal.directions import extract_directions
    from alignlab.refusal.prompts import build_prompt_sets
    from alignlab.refusal.score import calibrate_refusal_tokens
    from alignlab.refusal.shared_prefix import shared_logprobs

    torch.manual_seed(0)
    lm = load_model(args.model, device="cpu")
    fmt = chat_format(lm.tokenizer)
    sets = build_prompt_sets(PromptConfig())
    cfg = SelectConfig()
    harmful, harmless = sets.texts("harmful", "train"), sets.texts("harmless", "train")

    def stages() -> tuple[float, float, list[int], torch.Tensor]:
        t0 = time.perf_counter()
        tokens = calibrate_refusal_tokens(fmt, shared_logprobs(lm.model, fmt, harmful[:64], cfg.batch_size),
                                          shared_logprobs(lm.model, fmt, harmless[:64], cfg.batch_size))
        t1 = time.perf_counter()
        r = extract_directions(lm.model, fmt, harmful, harmless, list(tokens.ids),
                               filter_baseline=cfg.filter_baseline, batch_size=cfg.extract_batch_size).r
        return t1 - t0, time.perf_counter() - t1, list(tokens.ids), r

    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    out = {}
    for _ in range(args.rounds):
        for packed in (False, True):
            prefix_split.ENABLED = packed
            t_tok, t_ext, ids, r = stages()
            times[packed].append((t_tok, t_ext))
            out[packed] = (ids, r)
    prefix_split.ENABLED = True

    def med(packed: bool, i: int) -> float:
        return statistics.median(t[i] for t in times[packed])

    print(f"model {args.model}: {len(harmful)} + {len(harmless)} train prompts, {torch.get_num_threads()} threads, "
          f"median of {args.rounds} alternating rounds")
    for i, name in enumerate(("tokens", "extract")):
        print(f"{name:8s} padded {med(False, i):6.1f} s   packed {med(True, i):6.1f} s   "
              f"({med(False, i) / med(True, i):.2f}x)")
    total_pad, total_pack = med(False, 0) + med(False, 1), med(True, 0) + med(True, 1)
    print(f"both     padded {total_pad:6.1f} s   packed {total_pack:6.1f} s   ({total_pad / total_pack:.2f}x)")
    (ids_pad, r_pad), (ids_pack, r_pack) = out[False], out[True]
    rel = float(((r_pack - r_pad).norm(dim=-1) / r_pad.norm(dim=-1).clamp_min(1e-12)).max())
    nonzero = r_pad.norm(dim=-1) > 0  # a layer-0 candidate whose tokens are the same on both sides is 0
    cos = torch.nn.functional.cosine_similarity(r_pack, r_pad, dim=-1)[nonzero]
    print(f"same refusal tokens: {ids_pack == ids_pad} ({ids_pack}); directions: largest |dr|/|r| {rel:.2e}, "
          f"lowest cosine (nonzero candidates) {float(cos.min()):.9f}")


if __name__ == "__main__":
    main()
