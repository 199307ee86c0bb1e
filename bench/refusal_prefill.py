"""Prefill throughput with alignlab's directional-ablation hooks vs the same model without hooks.

On a GPU: a randomly initialised Llama-3-8B-shaped model in bf16 (as in shared/tools/gpu_anchor.py),
batch 32 x 64 and 64 x 128 tokens, logits for the last position only. On a CPU (``--quick``): a small
llama. Prints tokens/s for plain, hooked (ours) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _time(fn, iters: int, warm: int, cuda: bool) -> float:
    for _ in range(warm):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model (CPU smoke test)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignlab.refusal.intervene import ablate

    cuda = torch.cuda.is_available() and not args.quick
    if args.quick:
        cfg = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2)
        shapes, dtype, device = [(8, 64)], torch.float32, "cpu"
    else:
        cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192)
        shapes, dtype, device = [(32, 64), (64, 128)], torch.bfloat16, "cuda"
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    r = torch.randn(cfg.hidden_size)
    results = {"device": torch.cuda.get_device_name() if cuda else "cpu"}
    for bs, seq in shapes:
        ids = torch.randint(0, cfg.vocab_size - 1, (bs, seq), device=device)

        def run(ids=ids):
            with torch.no_grad():
                model(ids, logits_to_keep=1)

        plain = _time(run, 5, 2, cuda)
        with ablate(model, r):
            hooked = _time(run, 5, 2, cuda)
        tok = bs * seq
        results[f"{bs}x{seq}"] = {"plain_tok_s": tok / plain, "ablated_tok_s": tok / hooked,
                                  "ablated_vs_plain": plain / hooked}
        print(f"prefill {bs}x{seq}: plain {tok / plain:,.0f} tok/s, alignlab ablation {tok / hooked:,.0f} tok/s "
              f"(ratio {plain / hooked:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
