"""Peak memory of a whole `alignlab refusal run` relative to the size of the model's weights (issue 19 §3:
target <= 1.25x weights + activations; before the in-place edit the run held two models).

Runs the pipeline in a fresh child process (small prompt counts: the model's footprint, not the
activations, is what is measured) and reports peak RSS above the child's RSS after imports on CPU, or
peak allocated memory on a GPU, divided by the bytes of the model's parameters and buffers.

    python bench/refusal_memory.py [--model smollm2-135m-refusal] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys
import torch, transformers  # noqa: F401  (their import cost is the baseline, not the run's)
from alignlab.cli import main
from alignlab.models import load_model

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

base = rss_mb()
args = json.loads(sys.argv[1])
code = main(args["argv"])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
print(json.dumps({"code": code, "base_mb": base, "peak_mb": peak, "gpu_peak_mb": gpu}))
"""


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

    weights = weight_mb(args.model, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["refusal", "run", args.model, "--out", f"{tmp}/run", "--select", "rd", "--device", args.device,
                "--screen-n", "2", "--full-k", "2",
                "--n-train", "32", "--n-val", "16", "--n-test-harmful", "8", "--n-test-harmless", "8",
                "--kl-max", "100", "--induce-min=-1e9"]
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"argv": argv})], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(proc.returncode)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["code"] != 0:
        raise SystemExit(f"refusal run exited {out['code']}")
    extra = out["peak_mb"] - out["base_mb"]
    print(f"model {args.model}: weights {weights:.0f} MiB; child RSS after imports {out['base_mb']:.0f} MiB, "
          f"peak {out['peak_mb']:.0f} MiB")
    print(f"peak RSS above imports / weights: {extra / weights:.2f}x  (target <= 1.25x weights + activations)")
    if out["gpu_peak_mb"]:
        print(f"peak GPU allocated / weights: {out['gpu_peak_mb'] / weights:.2f}x")


if __name__ == "__main__":
    main()
