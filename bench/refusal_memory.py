"""Peak memory of a whole `alignlab refusal run` relative to the size of the model's weights (issue 19 §3:
target <= 1.25x weights + activations; before the in-place edit the run held two models).

Runs the pipeline in a fresh child process (small prompt counts: the model's footprint, not the
activations, is what is measured) and reports peak RSS above the child's RSS after imports on CPU, or
peak allocated memory on a GPU, divided by the bytes of the model's parameters and buffers, and names the stages
whose sampled RSS was highest (where to look next).

"+ activations" is measured, not guessed: a second child loads the same model and runs plain ``model.generate``
on the run's own held-out prompts at the evaluation batch size and new-token count (both splits in the same
batches, as the evaluation generates them); its peak is the baseline, and
the run's cost over it, in weights, is the number the target bounds (<= 0.25x). For comparison the child then
runs a naive CE forward per batch (every position's logits at once; our CE keeps only the completion positions).

    python bench/refusal_memory.py [--model smollm2-135m-refusal] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PREAMBLE = r"""
import json, resource, sys
import torch, transformers  # noqa: F401  (their import cost is the baseline, not the run's)
from alignlab.cli import main
from alignlab.models import load_model
from alignlab.models.chat import chat_format

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

base = rss_mb()
args = json.loads(sys.argv[1])
gpu = lambda: torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
"""

CHILD = PREAMBLE + r"""
import threading, time
from alignlab.refusal import run as run_module

stages, current = {}, ["start"]  # stage -> peak RSS above imports (MiB), sampled every 2 ms

def sample():
    while True:
        name = current[0]
        stages[name] = max(stages.get(name, 0.0), rss_mb() - base)
        time.sleep(0.002)

threading.Thread(target=sample, daemon=True).start()
staged = run_module._staged

def traced(name, fn, *a):
    current[0] = name
    try:
        return staged(name, fn, *a)
    finally:
        current[0] = "between stages"

run_module._staged = traced
code = main(args["argv"])
print(json.dumps({"code": code, "base_mb": base, "peak_mb": maxrss_mb(), "gpu_peak_mb": gpu(), "stages": stages}))
"""

INFER = PREAMBLE + r"""
lm = load_model(args["model"], device=args["device"])
fmt = chat_format(lm.tokenizer)
both = args["prompts"]["harmful"] + args["prompts"]["harmless"]  # the evaluation generates both splits per call
encs = [fmt.encode(both[i:i + args["batch"]], device=args["device"], strict=False)
        for i in range(0, len(both), args["batch"])]
outs = []
with torch.no_grad():
    for enc in encs:
        outs.append(lm.model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, do_sample=False,
                                      max_new_tokens=args["new_tokens"], pad_token_id=lm.tokenizer.pad_token_id))
generate_peak = maxrss_mb()
with torch.no_grad():  # the naive CE forward: every position's logits at once
    for enc, out in zip(encs, outs):
        new = torch.ones(out.shape[0], out.shape[1] - enc.input_ids.shape[1], dtype=enc.attention_mask.dtype,
                         device=out.device)
        lm.model(input_ids=out, attention_mask=torch.cat([enc.attention_mask, new], 1))
print(json.dumps({"base_mb": base, "generate_peak_mb": generate_peak, "peak_mb": maxrss_mb(), "gpu_peak_mb": gpu()}))
"""


def child(code: str, payload: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(payload)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(proc.returncode)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_prompts(run_dir: Path) -> dict[str, list[str]]:
    sets = json.loads((run_dir / "prompts.json").read_text())["sets"]
    return {split: [row[0] for row in sets[split]["test"]] for split in ("harmful", "harmless")}


def weight_mb(model_name: str, device: str) -> float:
    from alignlab.models import load_model

    lm = load_model(model_name, device="cpu")
    seen, total = set(), 0
    for t in list(lm.model.parameters()) + list(lm.model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-refusal")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from alignlab.refusal.config import EvalConfig

    weights = weight_mb(args.model, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["refusal", "run", args.model, "--out", f"{tmp}/run", "--select", "rd", "--device", args.device,
                "--screen-n", "2", "--full-k", "2", "--subspace-rank", "1",
                "--n-train", "32", "--n-val", "16", "--n-test-harmful", "8", "--n-test-harmless", "8",
                "--kl-max", "100", "--induce-min=-1e9"]
        out = child(CHILD, {"argv": argv})
        if out["code"] != 0:
            raise SystemExit(f"refusal run exited {out['code']}")
        infer = child(INFER, {"model": args.model, "device": args.device, "prompts": test_prompts(Path(tmp) / "run"),
                              "batch": EvalConfig().batch_size, "new_tokens": EvalConfig().max_new_tokens})
    run, plain = out["peak_mb"] - out["base_mb"], infer["generate_peak_mb"] - infer["base_mb"]
    naive = infer["peak_mb"] - infer["base_mb"]
    print(f"model {args.model}: weights {weights:.0f} MiB; peak RSS above imports: run {run:.0f} MiB, plain "
          f"model.generate on the same prompts and shapes {plain:.0f} MiB (then a naive full-logits CE forward: "
          f"{naive:.0f} MiB)")
    print(f"run / weights {run / weights:.2f}x; plain generate / weights {plain / weights:.2f}x (weights + "
          f"activations); run - plain generate = {(run - plain) / weights:+.2f}x weights (target <= +0.25x)")
    top = sorted(out["stages"].items(), key=lambda kv: -kv[1])[:4]
    print("highest stages (sampled RSS above imports): " + ", ".join(f"{k} {v:.0f} MiB" for k, v in top))
    if out["gpu_peak_mb"] and infer["gpu_peak_mb"]:
        print(f"GPU peak allocated / weights: run {out['gpu_peak_mb'] / weights:.2f}x, plain inference "
              f"{infer['gpu_peak_mb'] / weights:.2f}x")


if __name__ == "__main__":
    main()
