"""Feature inspection (spec §7, §10 "Inspection") on a tiny random llama."""

from __future__ import annotations

import json
import re

import pytest
import torch

from alignlab.errors import AlignlabError, DataError
from alignlab.io import save_tensors_atomic
from alignlab.sae import SAEConfig, build_sae
from alignlab.sae.activations import ActivationSource, ContextConfig, Hook, parse_hook
from alignlab.sae.inspect import (
    InspectConfig,
    direction_stats,
    load_direction,
    logit_effects,
    run_inspect,
    scan_latents,
    unembed_gain,
)

TEXTS = [f"Inspection text {i}: tokens, tokens and more tokens about item {i * 11}. " * 3 for i in range(60)]
HOOK = Hook("block_out", 1)


@pytest.fixture(scope="module")
def setup():
    from alignlab.models.tiny import tiny_model

    model, tok = tiny_model("llama", seed=0)
    sae = build_sae(SAEConfig("standard", 64, 96, hook_point="resid_post.1", hook_layer=1, seed=3))
    return model, tok, sae


def test_streaming_top_k_equals_brute_force(setup):
    model, tok, sae = setup
    cfg = InspectConfig(tokens=500, batch_contexts=5, context_size=20, top_k=4)
    scan = scan_latents(model, tok, sae, HOOK, TEXTS, cfg, progress=False)
    src = ActivationSource(model, tok, HOOK, TEXTS, ContextConfig(20), batch_contexts=5)
    rows = []
    for b in src.batches():
        rows.append(b.acts)
        if sum(r.shape[0] for r in rows) >= 500:
            break
    with torch.no_grad():
        f = sae.encode(torch.cat(rows))  # [N, n]
    assert scan.n_tokens == f.shape[0]
    assert torch.allclose(scan.top_vals, f.topk(4, dim=0).values, atol=1e-6)
    j = 5
    assert torch.allclose(f[scan.top_rows[:, j], j], scan.top_vals[:, j], atol=1e-6)
    assert torch.equal(scan.fires, (f > 0).sum(0))
    assert int(scan.hist.sum()) == int((f > 0).sum())
    # the recorded (context, position) of a top row points back at the same token
    r = int(scan.top_rows[0, j])
    assert 0 < int(scan.row_pos[r]) < 20
    # the reservoir: min(samples, fires) distinct activating rows per latent, with their true activations
    for lat in range(f.shape[1]):
        got = scan.sample_rows[:, lat][scan.sample_vals[:, lat] > 0]
        assert got.numel() == min(cfg.samples, int(scan.fires[lat])) and got.unique().numel() == got.numel()
        assert torch.allclose(f[got, lat], scan.sample_vals[:, lat][scan.sample_vals[:, lat] > 0], atol=1e-6)


def test_reservoir_is_a_uniform_sample_of_activating_rows(setup):
    """Over seeds, early and late activating rows are sampled equally often (a uniform reservoir, not the
    first or last rows streamed)."""
    model, tok, sae = setup
    first_half = total = 0
    for seed in range(20):
        cfg = InspectConfig(tokens=200, batch_contexts=5, context_size=20, top_k=1, samples=16, seed=seed)
        scan = scan_latents(model, tok, sae, HOOK, TEXTS, cfg, progress=False)
        lat = int(scan.fires.argmax())
        rows = scan.sample_rows[:, lat][scan.sample_vals[:, lat] > 0]
        assert rows.numel() == 16 < int(scan.fires[lat])
        active = torch.arange(scan.n_tokens)  # the densest latent fires on every row here
        assert int(scan.fires[lat]) == scan.n_tokens
        first_half += int((rows < active.median()).sum())
        total += rows.numel()
    assert 0.4 < first_half / total < 0.6  # 320 draws: 0.5 +- 0.028 (1 sigma)


def test_planted_direction_ranks_first_and_dashboard_is_offline(setup, tmp_path):
    model, tok, sae = setup
    j = 17
    r = sae.W_dec[j].detach().clone() * 3.0
    stats = direction_stats(sae, r)
    assert int(stats["order"][0]) == j and stats["cos_dec"][j] == pytest.approx(1.0, abs=1e-6)
    assert stats["frac_captured"]["1"] == pytest.approx(1.0, abs=1e-6)
    # a [n_pos, n_layers, d] file, refusal-style; the SAE's layer (1) and the last position are picked
    stack = torch.randn(2, 3, 64)
    stack[-1, 1] = r
    path = tmp_path / "direction.safetensors"
    save_tensors_atomic(path, {"direction": stack}, metadata={"hook": "resid_post.1"})
    out = tmp_path / "dash.html"
    cfg = InspectConfig(tokens=300, batch_contexts=5, context_size=20, latents=6, top_k=3, direction=str(path))
    summary = run_inspect(model, tok, sae, TEXTS, cfg, out_html=out, bundle=tmp_path / "bundle", progress=False)
    assert summary["top_cos_latent"] == j and summary["top_cos"] == pytest.approx(1.0, abs=1e-6)
    page = out.read_text()
    assert f"id='l{j}'" in page and "data:image/png;base64," in page
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", page)
    assert refs and not [u for u in refs if "http" in u]
    assert (tmp_path / "bundle" / "inspect.safetensors").is_file()
    data = json.loads(re.search(r"id='latent-data'>(.*?)</script>", page, re.S).group(1))
    assert len(data["density"]) == len(data["cos_dec"]) == sae.cfg.d_sae  # every latent is in the index
    assert max(range(sae.cfg.d_sae), key=lambda i: data["cos_dec"][i]) == j
    assert page.count("<svg") == 6 and "promotes" in page  # a logit-effect chart per detailed latent
    assert "quantile 75–100% of activating tokens" in page


def test_contexts_render_newlines_and_control_characters_visibly(setup, tmp_path):
    from alignlab.sae.dashboard import visible_token

    assert visible_token("a\nb\t<c>\x01") == ('a<span class="ws">↵</span>b<span class="ws">⇥</span>&lt;c&gt;'
                                             '<span class="ws">␁</span>')
    model, tok, sae = setup
    texts = [f"line {i}\n\tindented {i}\n\nnext paragraph {i}. " * 4 for i in range(40)]
    cfg = InspectConfig(tokens=300, batch_contexts=5, context_size=20, latents=4, top_k=3)
    run_inspect(model, tok, sae, texts, cfg, out_html=tmp_path / "nl.html", progress=False)
    page = (tmp_path / "nl.html").read_text()
    contexts = re.findall(r'<div class="ctx">.*?</div>', page, re.S)
    assert contexts and all("\n" not in c and "\t" not in c for c in contexts)  # one line per context
    assert "↵" in page


def test_load_direction_checks(setup, tmp_path):
    _m, _t, sae = setup
    r = torch.randn(64)
    p = tmp_path / "r.safetensors"
    save_tensors_atomic(p, {"r": r}, metadata={"hook": "resid_pre.1"})
    with pytest.raises(AlignlabError, match="recorded at resid_pre.1.*--force"):
        load_direction(p, 64, HOOK)
    assert torch.equal(load_direction(p, 64, HOOK, force=True), r)
    tl = tmp_path / "tl.safetensors"  # a TransformerLens hook name for the same hook is accepted
    save_tensors_atomic(tl, {"r": r}, metadata={"hook_name": "blocks.1.hook_resid_post"})
    assert torch.equal(load_direction(tl, 64, HOOK), r)
    plain = tmp_path / "plain.safetensors"
    save_tensors_atomic(plain, {"a": torch.randn(3, 64), "b": torch.randn(3, 64)})
    with pytest.raises(DataError, match="--direction-key"):
        load_direction(plain, 64, HOOK)
    with pytest.raises(AlignlabError, match="--direction-layer 2 differs"):
        load_direction(plain, 64, HOOK, key="a", layer=2)
    assert load_direction(plain, 64, HOOK, key="b", layer=2, force=True).shape == (64,)
    with pytest.raises(DataError, match=r"expected \[32\]"):
        load_direction(p, 32, HOOK, force=True)
    np_path = tmp_path / "r.npy"
    import numpy as np

    np.save(np_path, np.stack([r.numpy(), 2 * r.numpy()]))  # [n_layers, d]
    assert torch.allclose(load_direction(np_path, 64, HOOK), 2 * r)
    (tmp_path / "x.pt").write_text("x")
    with pytest.raises(DataError, match="no pickles"):
        load_direction(tmp_path / "x.pt", 64, HOOK)


def test_logit_effects_fold_the_final_norm_gain(setup):
    model, _tok, sae = setup
    gain = unembed_gain(model.model.norm, 64)
    assert torch.allclose(gain, model.model.norm.weight.float())
    eff = logit_effects(model, sae, [3], top=5)[0]
    manual = (sae.W_dec[3].detach() * gain) @ model.lm_head.weight.detach().T
    assert [t for t, _ in eff["top"]] == manual.topk(5).indices.tolist()
    assert eff["bottom"][0][1] == pytest.approx(float(manual.min()), rel=1e-5)
    layer_norm = torch.nn.LayerNorm(64)
    with torch.no_grad():
        layer_norm.weight.uniform_(0.5, 1.5)
    assert torch.equal(unembed_gain(layer_norm, 64), layer_norm.weight.float())


def test_parse_for_inspect_hook():
    assert parse_hook("resid_post.1") == HOOK


@pytest.mark.browser
def test_dashboard_renders_in_headless_chromium_without_console_errors(setup, tmp_path, chromium):
    _chromium = chromium  # tests/conftest.py: headless Chromium, skipped where /usr/bin/chromium is absent
    model, tok, sae = setup
    j = 17
    path = tmp_path / "r.safetensors"
    save_tensors_atomic(path, {"direction": sae.W_dec[j].detach().clone()}, metadata={"hook": "resid_post.1"})
    texts = [f"line {i}\n\tindented {i}\n\nnext paragraph {i}. " * 4 for i in range(40)]
    cfg = InspectConfig(tokens=300, batch_contexts=5, context_size=20, latents=5, top_k=3, direction=str(path))
    run_inspect(model, tok, sae, texts, cfg, out_html=tmp_path / "dash.html", progress=False)
    url = (tmp_path / "dash.html").as_uri()
    dom, console = _chromium(["--dump-dom", url], tmp_path / "profile1")
    assert console == []  # any console message (an uncaught error above all) fails the page
    body = re.search(r'<table id="idx">.*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    assert len(rows) == min(100, sae.cfg.d_sae)  # the script ran and filled the first index page
    assert rows[0].startswith(f'<td><a href="#l{j}">{j}</a></td>')  # sorted by cos(d_i, r): planted first
    assert "page 1/1" in dom
    shot = tmp_path / "dash.png"
    _out, console = _chromium([f"--screenshot={shot}", "--window-size=1280,1600", url], tmp_path / "profile2")
    assert console == []
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    # the detector works: a page with a script error is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><p>x</p><script>undefinedFunction()</script>")
    _dom, console = _chromium(["--dump-dom", bad.as_uri()], tmp_path / "profile3")
    assert any("Uncaught ReferenceError" in line for line in console)
