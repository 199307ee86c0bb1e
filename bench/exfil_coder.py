"""Bench: LM arithmetic coder vs gzip -9 / zstd -19 on English prose (spec §6 report).

    OMP_NUM_THREADS=1 .venv/bin/python bench/exfil_coder.py            # n-gram + default LM on the prose sample
    OMP_NUM_THREADS=1 .venv/bin/python bench/exfil_coder.py --no-lm    # n-gram only (seconds)

Text: alignlab's own prose sample (src/alignlab/exfil/data/prose_sample.txt) and an excerpt of the
Python reference manual that ships with the stdlib (pydoc_data.topics). Never touches the network.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from alignlab.exfil.bench import render_bench, run_bench
from alignlab.exfil.probmodels import NGramModel

PROSE = Path(__file__).resolve().parents[1] / "src" / "alignlab" / "exfil" / "data" / "prose_sample.txt"


def pydoc_excerpt(n_bytes: int = 2000) -> bytes:
    from pydoc_data.topics import topics

    return topics["assignment"].encode("utf-8")[:n_bytes]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-lm", action="store_true", help="skip the embedded default LM (slow on CPU)")
    ap.add_argument("--wctx", type=int, default=1024)
    ap.add_argument("--json", help="write all reports to this JSON file")
    args = ap.parse_args()
    texts = {"prose_sample": PROSE.read_bytes(), "pydoc_assignment_2kB": pydoc_excerpt()}
    models = [("ngram", NGramModel())]
    if not args.no_lm:
        from alignlab.exfil.lm import load_reference_lm

        t = time.perf_counter()
        models.append(("smollm2-135m-instruct", load_reference_lm("smollm2-135m-instruct", args.wctx)))
        print(f"loaded the default LM in {time.perf_counter() - t:.1f} s")
    out = {}
    for text_name, data in texts.items():
        for model_name, model in models:
            rep = run_bench(data, model, verify=True)
            print(f"\n== {text_name} ({len(data)} B) under {model_name}")
            print(render_bench(rep), end="")
            out[f"{text_name}/{model_name}"] = rep.to_dict()
    if args.json:
        from alignlab.io import write_json_atomic

        write_json_atomic(args.json, out)
    print(json.dumps({k: {"bits_per_token": round(v["bits_per_token"], 3), "lm_vs_zstd": v["lm_vs_zstd"]}
                      for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
