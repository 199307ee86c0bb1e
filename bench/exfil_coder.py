"""Bench: LM arithmetic coder speed (new lockstep coder vs the pre-issue-22 coder, same run) and size
against gzip -9 / zstd -19 (spec §6 report).

    .venv/bin/python bench/exfil_coder.py                     # README.md round trip + legacy baseline
    .venv/bin/python bench/exfil_coder.py --no-lm             # n-gram only (seconds)
    .venv/bin/python bench/exfil_coder.py --text FILE --legacy-tokens 300 --json out.json

The legacy coder (kept below as :class:`LegacyLM`, the code as it was before issue 22) feeds one token
per forward through transformers' growing DynamicCache, quantises with a full sort and a full
cumulative sum per token, and drops the cache and re-feeds W_ctx/2 tokens whenever W_ctx is reached.
It is too slow for the whole README (≈ 15 min), so it is timed on the first ``--legacy-tokens``
tokens (which favours it: its per-token cost grows with the context), and its bits/token on the whole
text come from teacher-forced windows that reproduce its exact context schedule (ideal code length
under its quantised distributions; its payload is at most 2 bits longer).
Never touches the network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.exfil.bench import render_bench, run_bench
from alignlab.exfil.coder import auto_streams, compress, decompress
from alignlab.exfil.lm import deterministic_torch, model_digest, quantize
from alignlab.exfil.probmodels import Fingerprint, NGramModel, T, UniformBytes

ROOT = Path(__file__).resolve().parents[1]
PROSE = ROOT / "src" / "alignlab" / "exfil" / "data" / "prose_sample.txt"


class LegacyLM:
    """The pre-issue-22 LM probability model (per-symbol protocol), verbatim in behaviour."""

    def __init__(self, model: Any, tokenizer: Any, name: str, wctx: int = 1024, digest: bytes | None = None) -> None:
        self.model, self.tokenizer, self.wctx = model, tokenizer, wctx
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.start_id = int(start if start is not None else 0)
        self.fingerprint = Fingerprint(name + "-legacy", digest or model_digest(model, tokenizer), "float32", wctx, T)
        self.reset()

    def reset(self) -> None:
        self._ctx: list[int] = [self.start_id]
        self._feed: list[int] = [self.start_id]
        self._cache: Any = None
        self._f: np.ndarray | None = None
        self._cum: np.ndarray | None = None

    def _ensure(self) -> None:
        if self._cum is not None:
            return
        import torch

        with deterministic_torch():
            out = self.model(input_ids=torch.tensor([self._feed]), cache=self._cache, use_cache=True)
        self._cache = out.cache
        self._f = quantize(out.logits[0, -1].float().numpy())  # [V]
        self._cum = np.concatenate([[0], np.cumsum(self._f)])  # [V + 1]

    def total(self) -> int:
        return T

    def interval(self, sym: int) -> tuple[int, int]:
        self._ensure()
        return int(self._cum[sym]), int(self._f[sym])

    def find(self, target: int) -> tuple[int, int, int]:
        self._ensure()
        sym = int(np.searchsorted(self._cum, target, side="right")) - 1
        return sym, int(self._cum[sym]), int(self._f[sym])

    def push(self, sym: int) -> None:
        self._ctx.append(sym)
        if len(self._ctx) >= self.wctx:
            self._ctx = self._ctx[-(self.wctx // 2):]
            self._cache = None
            self._feed = list(self._ctx)
        else:
            self._feed = [sym]
        self._f = self._cum = None

    def tokenize(self, data: bytes) -> list[int] | None:
        text = data.decode("utf-8")
        ids = [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]
        return ids if self.detokenize(ids) == data else None

    def detokenize(self, ids: list[int]) -> bytes:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False).encode()

    def byte_model(self) -> UniformBytes:
        return UniformBytes()


def legacy_ideal_bits(legacy: LegacyLM, ids: list[int]) -> float:
    """Σ −log2(f_t / T) of the legacy coder on ``ids``: one teacher-forced forward per context window
    (its schedule: grow to W_ctx, keep the last W_ctx/2, grow again), quantised exactly as it does."""
    import torch

    seq, w, n = [legacy.start_id] + ids, legacy.wctx, len(ids)
    bits, i, ws = 0.0, 0, 0
    with deterministic_torch():
        while i < n:
            end = min(ws + w - 1, n)  # window seq[ws:end] codes ids[i:end]
            logits = legacy.model(input_ids=torch.tensor([seq[ws:end]])).logits[0].float().numpy()
            for p in range(i - ws, end - ws):
                bits += math.log2(T) - math.log2(int(quantize(logits[p])[seq[ws + p + 1]]))
            i, ws = end, end + 1 - w // 2
    return bits


def timed_round_trip(data: bytes, model: Any) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    comp = compress(data, model)
    t1 = time.perf_counter()
    assert decompress(comp.blob, model) == data
    return t1 - t0, time.perf_counter() - t1, comp.stats.n_tokens


def interleaved_speed(new: Any, legacy: LegacyLM, ids: list[int], legacy_tokens: int, streams: int,
                      rounds: int = 3) -> dict:
    """Tokens/s of both coders timed alternately on the same text (a shared machine's load drifts): the
    legacy coder on the first ``legacy_tokens`` tokens, the new one on ``streams`` times as many.

    Wall-clock tokens/s (``*_enc``, ``*_dec``) and tokens per CPU-second of this process (``*_cpu``): both
    coders run one torch thread, so on an idle machine the two agree, and on a loaded one the CPU-time
    ratio is the steadier (it still includes slowdowns from shared caches and memory bandwidth)."""
    old_data = new.detokenize(ids[:legacy_tokens])
    new_data = new.detokenize(ids[:legacy_tokens * streams])
    times: dict[str, list[float]] = {f"{who}_{what}": [] for who in ("old", "new")
                                     for what in ("enc", "dec", "enc_cpu", "dec_cpu")}
    for r in range(rounds):
        for who, data, model, k in (("old", old_data, legacy, None), ("new", new_data, new, streams)):
            t0, c0 = time.perf_counter(), time.process_time()
            comp = compress(data, model, streams=k)
            t1, c1 = time.perf_counter(), time.process_time()
            assert decompress(comp.blob, model) == data
            t2, c2 = time.perf_counter(), time.process_time()
            n = comp.stats.n_tokens
            for key, seconds in (("enc", t1 - t0), ("dec", t2 - t1), ("enc_cpu", c1 - c0), ("dec_cpu", c2 - c1)):
                times[f"{who}_{key}"].append(n / seconds)
            print(f"round {r}: {who} {n} tokens, encode {n / (t1 - t0):.2f} tok/s ({n / (c1 - c0):.2f} per CPU-s), "
                  f"decode {n / (t2 - t1):.2f} tok/s ({n / (c2 - c1):.2f} per CPU-s)", flush=True)
    mean = {k: sum(v) / len(v) for k, v in times.items()}
    out = {**mean, "encode_speedup": mean["new_enc"] / mean["old_enc"],
           "decode_speedup": mean["new_dec"] / mean["old_dec"],
           "encode_speedup_cpu": mean["new_enc_cpu"] / mean["old_enc_cpu"],
           "decode_speedup_cpu": mean["new_dec_cpu"] / mean["old_dec_cpu"],
           "streams": streams, "legacy_tokens": legacy_tokens}
    print(f"interleaved: encode x{out['encode_speedup']:.2f}, decode x{out['decode_speedup']:.2f} wall clock; "
          f"x{out['encode_speedup_cpu']:.2f}, x{out['decode_speedup_cpu']:.2f} CPU time "
          f"({streams} streams vs legacy, same text, alternating)", flush=True)
    return out


def lm_comparison(args: argparse.Namespace, data: bytes) -> dict:
    import copy

    from alignlab.exfil.lm import LMProbabilityModel
    from alignlab.models import load_model

    t = time.perf_counter()
    loaded = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
    # the legacy coder keeps its own float32 copy: the new coder converts its model to its compute dtype
    legacy = LegacyLM(copy.deepcopy(loaded.model), loaded.tokenizer, "smollm2-135m-instruct", 1024,
                    hashlib.sha256(b"legacy").digest())
    new = LMProbabilityModel(loaded.model, loaded.tokenizer, "smollm2-135m-instruct", args.wctx, args.threads,
                             args.dtype)
    print(f"loaded the default LM in {time.perf_counter() - t:.1f} s", flush=True)
    ids = new.tokenize(data) or []
    if args.quick:
        return {"interleaved": interleaved_speed(new, legacy, ids, args.legacy_tokens,
                                                 args.streams or auto_streams(len(ids)))}
    prefix = new.detokenize(ids[:args.legacy_tokens])
    before = timed_round_trip(prefix, legacy)  # timed before and after the new coder: the machine is shared
    print(f"legacy (before): {before[2]} tokens, encode {before[0]:.1f} s, decode {before[1]:.1f} s", flush=True)
    rep = run_bench(data, new, verify=True, streams=args.streams or None, progress=True)
    print(f"\n== {args.text} ({len(data)} B) under the new coder")
    print(render_bench(rep), end="")
    after = timed_round_trip(prefix, legacy)
    print(f"legacy (after): {after[2]} tokens, encode {after[0]:.1f} s, decode {after[1]:.1f} s", flush=True)
    n_old = before[2]
    enc_s, dec_s = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    old = {"tokens": n_old, "encode_tokens_per_s": n_old / enc_s, "decode_tokens_per_s": n_old / dec_s,
           "encode_s_before_after": [before[0], after[0]], "decode_s_before_after": [before[1], after[1]]}
    t = time.perf_counter()
    old["bits_per_token"] = legacy_ideal_bits(legacy, ids) / len(ids)
    print(f"legacy bits/token on the whole text: {old['bits_per_token']:.4f} ({time.perf_counter() - t:.0f} s)")
    new_ideal = rep.ideal_bits / rep.n_tokens
    summary = {
        "text": str(args.text), "tokens": rep.n_tokens, "streams": rep.streams, "threads": rep.threads,
        "new_encode_tokens_per_s": rep.encode_tokens_per_s, "new_decode_tokens_per_s": rep.decode_tokens_per_s,
        "legacy": old,
        "encode_speedup": rep.encode_tokens_per_s / old["encode_tokens_per_s"],
        "decode_speedup": rep.decode_tokens_per_s / old["decode_tokens_per_s"],
        "round_trip_s": rep.encode_s + rep.decode_s,
        "new_bits_per_token": rep.bits_per_token, "new_ideal_bits_per_token": new_ideal,
        "bits_change_vs_legacy": new_ideal / old["bits_per_token"] - 1,
    }
    print(f"\nencode {rep.encode_tokens_per_s:.1f} tok/s vs legacy {old['encode_tokens_per_s']:.1f} "
          f"(x{summary['encode_speedup']:.2f}); decode {rep.decode_tokens_per_s:.1f} vs "
          f"{old['decode_tokens_per_s']:.1f} (x{summary['decode_speedup']:.2f}); legacy timed on {n_old} tokens")
    print(f"round trip {summary['round_trip_s']:.0f} s for {rep.n_tokens} tokens; bits/token {rep.bits_per_token:.4f} "
          f"(ideal {new_ideal:.4f}) vs legacy {old['bits_per_token']:.4f} "
          f"({100 * summary['bits_change_vs_legacy']:+.2f} %)")
    return {"report": rep.to_dict(), "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-lm", action="store_true", help="skip the embedded default LM (n-gram only)")
    ap.add_argument("--text", type=Path, default=ROOT / "README.md", help="text for the LM comparison")
    ap.add_argument("--legacy-tokens", type=int, default=300, help="tokens the legacy coder is timed on")
    ap.add_argument("--wctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="int4", help="compute dtype of the new coder")
    ap.add_argument("--streams", type=int, default=0, help="0: automatic")
    ap.add_argument("--quick", action="store_true", help="only the interleaved speed ratio on short prefixes "
                    "(--legacy-tokens tokens per stream): for a busy machine")
    ap.add_argument("--json", help="write all reports to this JSON file")
    args = ap.parse_args()
    out: dict = {}
    from pydoc_data.topics import topics

    for name, data in {"prose_sample": PROSE.read_bytes(),
                       "pydoc_assignment_2kB": topics["assignment"].encode("utf-8")[:2000]}.items():
        rep = run_bench(data, NGramModel(), verify=True)
        print(f"\n== {name} ({len(data)} B) under ngram")
        print(render_bench(rep), end="")
        out[f"{name}/ngram"] = rep.to_dict()
    if not args.no_lm:
        out["lm"] = lm_comparison(args, args.text.read_bytes())
    if args.json:
        from alignlab.io import write_json_atomic

        write_json_atomic(args.json, out)
    lm = out.get("lm", {})
    print(json.dumps(lm.get("summary", lm.get("interleaved", {})), indent=1))


if __name__ == "__main__":
    main()
