"""Cold vs warm load of the embedded default: the GGUF is dequantised once, then read from the cache.

Uses a fresh temporary cache directory, so the first load really converts.

    python bench/load.py [--model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="alignlab-cache-") as cache:
        os.environ["ALIGNLAB_CACHE"] = cache
        from alignlab.models import load_model

        t0 = time.perf_counter()
        load_model(args.model, device="cpu")
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_model(args.model, device="cpu")
        warm = time.perf_counter() - t0
    print(f"first load (dequantise + cache): {cold:.2f} s")
    print(f"second load (safetensors cache): {warm:.2f} s")
    print(f"speedup={cold / warm:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
