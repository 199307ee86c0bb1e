"""Generated tokens/s of the refusal evaluation's greedy decoding against plain ``model.generate``, same
prompts, same run (issue 19 §1: target >= 2x).

Both sides decode the same test prompts (harmful and harmless, the demo's sets) in length-sorted batches
with ``--max-new-tokens``; the baseline is what the evaluation did before (one ``model.generate`` call per
batch of 32), ours is ``alignlab.models.generate.generate_greedy`` at the evaluation's default batch (128)
(continuous batching: a finished row's place goes to a waiting prompt), and, for reference, our loop batch by
batch (finished rows leave, none join). Prints tokens/s,
the ratio and how many replies are token-identical.

    python bench/refusal_eval.py [--model smollm2-135m-refusal] [--n 128] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-refusal")
    parser.add_argument("--n", type=int, default=128, help="prompts (half harmful, half harmless test)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="baseline batch (the evaluation's old default)")
    parser.add_argument("--ours-batch-size", type=int, default=None,
                        help="our batch (default: the evaluation's, EvalConfig.batch_size)")
    args = parser.parse_args()

    from alignlab.models import continuous, load_model
    from alignlab.models.chat import chat_format
    from alignlab.models.generate import _hf_tokens, _stop_ids, generate_greedy
    from alignlab.refusal.config import EvalConfig, PromptConfig
    from alignlab.refusal.prompts import build_prompt_sets

    args.ours_batch_size = args.ours_batch_size or EvalConfig().batch_size
    torch.manual_seed(0)
    lm = load_model(args.model, device="cpu")
    fmt = chat_format(lm.tokenizer)
    sets = build_prompt_sets(PromptConfig(n_test_harmless=1000))
    half = args.n // 2
    prompts = sets.texts("harmful", "test")[:half] + sets.texts("harmless", "test")[:args.n - half]
    eos = _stop_ids(lm.model, lm.tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))

    def baseline() -> list[list[int]]:
        out: list[list[int]] = [[] for _ in prompts]
        for s in range(0, len(order), args.batch_size):
            idx = order[s:s + args.batch_size]
            enc = fmt.encode([prompts[i] for i in idx], device=lm.device, strict=False)
            rows = _hf_tokens(lm.model, enc.input_ids, enc.attention_mask, args.max_new_tokens, eos,
                              lm.tokenizer.pad_token_id)
            for row, j in enumerate(enc.kept):
                out[idx[j]] = rows[row][0]
        return out

    with torch.no_grad():
        generate_greedy(lm.model, fmt, prompts[:4], 4, 4, progress=False)  # warm-up both paths
        t0 = time.perf_counter()
        ref = baseline()
        t_ref = time.perf_counter() - t0
        continuous.ENABLED = False  # our loop batch by batch (finished rows leave, none join)
        t0 = time.perf_counter()
        per_batch = generate_greedy(lm.model, fmt, prompts, args.max_new_tokens, args.ours_batch_size,
                                    progress=False)
        t_batch = time.perf_counter() - t0
        continuous.ENABLED = True  # waiting prompts take the finished rows' places
        t0 = time.perf_counter()
        ours = generate_greedy(lm.model, fmt, prompts, args.max_new_tokens, args.ours_batch_size, progress=False)
        t_ours = time.perf_counter() - t0
    n_tokens = sum(len(r) for r in ref)
    ref_text = [lm.tokenizer.decode(r, skip_special_tokens=True).strip() for r in ref]
    same = sum(a == b.text for a, b in zip(ref_text, ours))
    print(f"model {args.model}, {len(prompts)} prompts x <= {args.max_new_tokens} new tokens, batch {args.batch_size} "
          f"(baseline) / {args.ours_batch_size} (ours), "
          f"{torch.get_num_threads()} threads; {n_tokens} generated tokens")
    print(f"model.generate (baseline): {t_ref:7.1f} s  {n_tokens / t_ref:7.1f} tok/s")
    print(f"alignlab, batch by batch : {t_batch:7.1f} s  {n_tokens / t_batch:7.1f} tok/s  "
          f"({t_ref / t_batch:.2f}x)")
    print(f"alignlab generate_greedy : {t_ours:7.1f} s  {n_tokens / t_ours:7.1f} tok/s  (continuous batching)")
    same_batch = sum(a.text == b.text for a, b in zip(per_batch, ours))
    print(f"ratio: {t_ref / t_ours:.2f}x   identical replies: {same}/{len(prompts)} (to model.generate), "
          f"{same_batch}/{len(prompts)} (to batch by batch)")


if __name__ == "__main__":
    main()
