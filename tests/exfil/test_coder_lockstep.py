"""Lockstep LM coder on tiny random models: exact round trips over streams, sliding windows, dtypes and
threads; the fast pieces (row quantiser, interval/search, buffer cache) against their eager references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignlab.exfil.bench import progress_bar, run_bench
from alignlab.exfil.coder import auto_streams, compress, decompress
from alignlab.exfil.container import ContainerError, unpack
from alignlab.exfil.kvstep import new_cache
from alignlab.exfil.lm import (
    LMProbabilityModel,
    find_symbol,
    quantize,
    quantize_rows,
    spread_remainder,
    symbol_interval,
)
from alignlab.exfil.probmodels import NGramModel, T

TEXT = ("Grüße 😀 中文 — arithmetic coding under a shared language model, long enough to wrap a sixteen "
        "token window several times over, with punctuation; digits 0123456789 and CJK 日本語.").encode()


@pytest.fixture(scope="module")
def tiny():
    """SDPA attention, as real models load: the coder runs the lean Llama step (tests/exfil/test_coder.py
    keeps an eager model, which runs the HF forward)."""
    from alignlab.models.tiny import tiny_model

    model, tok = tiny_model("llama", seed=0)
    model.config._attn_implementation = "sdpa"
    return model, tok


def lm(tiny, **kw) -> LMProbabilityModel:
    model, tok = tiny
    return LMProbabilityModel(model, tok, "tiny-llama", **{"wctx": 16, **kw})


def test_quantize_rows_equals_eager_quantize():
    rng = np.random.default_rng(1)
    for v, scale in ((3, 1.0), (300, 5.0), (49152, 8.0), (1000, 40.0)):
        x = rng.normal(0, scale, size=(4, v)).astype(np.float32)
        x[1, : v // 2] = x[1, 0]  # many ties: the lower id must win
        rows = quantize_rows(x)
        for b in range(4):
            assert np.array_equal(rows[b], quantize(x[b]))
    assert quantize_rows(np.zeros((2, 3), np.float32)).tolist() == [[5592406, 5592405, 5592405]] * 2


def test_spread_remainder_matches_the_stable_sort_rule():
    """Positive, negative and larger-than-V remainders, on rows full of ties, against quantize's argsort rule."""
    rng = np.random.default_rng(3)
    for v, rem in ((7, 3), (7, -2), (7, 16), (1000, 437), (1000, -5), (49152, 20000), (49152, 0)):
        row = rng.integers(1, 6, v).astype(np.int64)  # few distinct values: many ties
        order = np.argsort(-row, kind="stable")
        want = row.copy()
        q, r = divmod(rem, v) if rem > 0 else (0, -rem)
        want[order[:r]] += 1 if rem > 0 else -1
        want += q
        spread_remainder(row, rem)
        assert np.array_equal(row, want), (v, rem)


def test_interval_and_search_match_cumsum():
    rng = np.random.default_rng(2)
    f = quantize_rows(rng.normal(0, 6, size=(1, 1300)))[0]
    cum = np.concatenate([[0], np.cumsum(f)])
    for sym in [0, 1, 511, 512, 513, 1299] + rng.integers(0, 1300, 50).tolist():
        assert symbol_interval(f, sym) == (int(cum[sym]), int(f[sym]))
    for target in [0, T - 1, int(cum[512]), int(cum[512]) - 1] + rng.integers(0, T, 200).tolist():
        sym = int(np.searchsorted(cum, target, side="right")) - 1
        assert find_symbol(f, target) == (sym, int(cum[sym]), int(f[sym]))


def test_buffer_cache_logits_equal_dynamic_cache(tiny):
    """The preallocated cache (no per-step concatenation) gives the same logits as transformers' own."""
    model, _ = tiny
    ids = torch.tensor([[1, 17, 42, 99, 5, 250, 3, 8, 77, 12]])
    with torch.inference_mode():
        ref_cache, buf_cache = None, new_cache(model.config, 16)
        for j in range(ids.shape[1]):
            ref = model(input_ids=ids[:, j:j + 1], cache=ref_cache, use_cache=True)
            ref_cache = ref.cache
            pos = torch.tensor([[j]])
            got = model(input_ids=ids[:, j:j + 1], position_ids=pos, cache=buf_cache, use_cache=True).logits
            assert torch.equal(got, ref.logits)


@pytest.mark.parametrize("streams", [1, 2, 3, 5])
def test_round_trip_streams_and_sliding_window(tiny, streams):
    model = lm(tiny)
    comp = compress(TEXT, model, streams=streams)
    assert comp.stats.streams == streams and unpack(comp.blob)[0].streams == streams
    assert comp.stats.n_tokens > 3 * 16  # each stream slides its window at least once for streams <= 3
    assert decompress(comp.blob, model) == TEXT
    assert comp.stats.payload_bits <= comp.stats.ideal_bits + 2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int4"])
def test_round_trip_dtypes_fresh_model(tiny, dtype):
    enc_model = lm(tiny, dtype=dtype)
    blob = compress(TEXT, enc_model, streams=2).blob
    assert unpack(blob)[0].fingerprint.dtype == dtype
    assert decompress(blob, lm(tiny, dtype=dtype)) == TEXT  # a fresh model object (fresh cache state)
    assert enc_model._lean is not None  # the lean Llama step (tests/exfil/test_llama_step.py)
    if dtype == "int4":  # every linear runs the int4 kernel, the head the int8 one
        kinds = {type(m).__name__ for m in enc_model.model.modules()}
        assert "Int4Linear" in kinds and type(enc_model.model.get_output_embeddings()).__name__ == "Int8Linear"


def test_two_threads_round_trip_and_thread_mismatch_refused(tiny):
    two = lm(tiny, threads=2, dtype="float32")
    comp = compress(TEXT, two, streams=2)
    assert unpack(comp.blob)[0].fingerprint.threads == 2
    assert decompress(comp.blob, two) == TEXT
    with pytest.raises(ContainerError, match=r"^thread count mismatch: .* 2 torch thread\(s\) .* runs 1.*--threads 2$"):
        decompress(comp.blob, lm(tiny, threads=1, dtype="float32"))
    with pytest.raises(ContainerError, match="fingerprint mismatch"):  # another dtype is another model
        decompress(comp.blob, lm(tiny, threads=2, dtype="bfloat16"))


def test_edge_inputs_and_stream_policy(tiny):
    model = lm(tiny)
    for data in (b"", b"a", b"\xff\xfe invalid", "日本".encode()):
        comp = compress(data, model, streams=4)
        assert decompress(comp.blob, model) == data
        assert comp.stats.streams <= max(comp.stats.n_tokens, 1)
    assert compress(b"\xff\xfe", model).stats.byte_mode
    assert [auto_streams(n) for n in (0, 100, 2047, 4096, 5933, 10**6)] == [1, 1, 1, 2, 2, 8]


def test_corrupted_payload_never_returns_wrong_text(tiny):
    from alignlab.exfil.container import pack

    model = lm(tiny)
    header, payload = unpack(compress(TEXT, model, streams=3).blob)
    bad = pack(header, bytes([payload[0] ^ 0x04]) + payload[1:])
    with pytest.raises(ContainerError, match="CRC32"):
        decompress(bad, model)


def test_bench_progress_lines_when_not_a_tty(capsys):
    rep = run_bench(("progress " * 400).encode(), NGramModel(), verify=True, progress=True)
    err = capsys.readouterr().err
    assert f"encode: {rep.n_tokens}/{rep.n_tokens} tokens" in err and f"decode: {rep.n_tokens}/" in err
    assert rep.encode_tokens_per_s > 0 and rep.decode_tokens_per_s > 0
    with progress_bar(10, "x", enabled=False) as bar:
        bar(5)
    assert capsys.readouterr().err == ""


def test_int4_linear_reproduces_a_q4_1_grid():
    """Weights already on a Q4_1 grid (d·q + m per 32-block) come back through the int4 kernel."""
    from alignlab.exfil.quantlinear import int4_linears

    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (64, 4, 32), generator=g).float()
    q[..., 0], q[..., 1] = 0, 15  # every block spans the grid, as GGUF's min/max blocks do
    d = (torch.rand(64, 4, 1, generator=g) * 0.02 + 0.001).bfloat16().float()
    m = (-torch.rand(64, 4, 1, generator=g) * 0.1).bfloat16().float()
    lin = torch.nn.Linear(128, 64, bias=False)
    lin.weight.data = (d * q + m).reshape(64, 128)
    model = torch.nn.Sequential(lin, torch.nn.Linear(64, 64))
    model.get_output_embeddings = lambda: None  # no head: both layers go int4
    x = torch.randn(3, 128)
    ref = torch.nn.functional.linear(x.bfloat16(), lin.weight.bfloat16()).float()
    assert int4_linears(model) == 2 and type(model[0]).__name__ == "Int4Linear"
    got = model[0](x).float()
    assert torch.allclose(got, ref, rtol=2e-2, atol=2e-2), (got - ref).abs().max()


def test_cli_codes_with_two_threads_by_default_and_old_containers_decode_with_one(monkeypatch):
    import alignlab.exfil.lm as lm_mod
    from alignlab.exfil import cli_coder

    seen: list[int] = []
    monkeypatch.setattr(lm_mod, "load_reference_lm", lambda spec, wctx, threads, dtype: seen.append(threads))
    cli_coder.make_model("smollm2-135m-instruct")
    cli_coder.make_model("smollm2-135m-instruct", threads=1)
    assert seen == [cli_coder.CLI_THREADS, 1] and cli_coder.CLI_THREADS == 2
