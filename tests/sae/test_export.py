"""`alignlab sae export --to jumprelu` (spec §6, §10 "Gated export"): exact for gated, batchtopk, matryoshka,
standard; calibrated for topk; the files load in the real SAELens."""

from __future__ import annotations

import json

import pytest
import torch

from alignlab.cli import main
from alignlab.errors import AlignlabError
from alignlab.sae import SAEConfig, build_sae, load_sae, save_sae
from alignlab.sae.export import compare_on, estimate_topk_threshold, to_jumprelu

EXTRA = {"topk": {"k": 4}, "batchtopk": {"k": 4}, "matryoshka": {"k": 4, "matryoshka_widths": (16, 64)}}


def _sae(arch, seed=0, dtype=torch.float32):
    sae = build_sae(SAEConfig(architecture=arch, d_in=16, d_sae=64, hook_point="resid_post.2", hook_layer=2,
                              **EXTRA.get(arch, {})))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
        if arch in ("batchtopk", "matryoshka"):
            sae.threshold.fill_(0.25)
        if arch == "jumprelu":
            sae.threshold.abs_()  # a trained theta is >= 0 (projected after every step)
    return sae.to(dtype).eval()


def _gated_with_negative_thresholds(dtype):
    sae = _sae("gated", dtype=dtype)
    with torch.no_grad():  # theta = b_mag - exp(r_mag) b_gate: half the latents get theta < 0
        sae.b_gate.copy_(torch.linspace(-1, 1, 64, dtype=dtype))
        sae.b_mag.copy_(torch.linspace(-0.5, 0.5, 64, dtype=dtype).flip(0))
    theta = sae.b_mag - sae.r_mag.exp() * sae.b_gate
    assert int((theta < 0).sum()) > 10 and int((theta > 0).sum()) > 10
    return sae


def test_gated_export_reproduces_f_tilde_exactly_in_fp64():
    sae = _gated_with_negative_thresholds(torch.float64)
    out = to_jumprelu(sae)
    assert out.exact and out.sae.cfg.architecture == "jumprelu" and out.sae.cfg.apply_b_dec_to_input
    x = torch.randn(2048, 16, dtype=torch.float64)
    with torch.no_grad():
        f_gated, f_jump = sae.encode(x), out.sae.encode(x)
        assert 0.05 < float((f_gated > 0).double().mean()) < 0.95
        assert torch.equal(f_gated > 0, f_jump > 0)  # the same gate on every latent, theta < 0 included
        assert float((f_gated - f_jump).abs().max()) < 1e-13
        assert float((sae(x) - out.sae(x)).abs().max()) < 1e-12


@pytest.mark.parametrize("arch", ["gated", "batchtopk", "matryoshka", "standard", "lp", "jumprelu"])
def test_exact_exports_survive_the_file_and_real_sae_lens(arch, tmp_path):
    import sae_lens

    sae = _gated_with_negative_thresholds(torch.float32) if arch == "gated" else _sae(arch)
    out = to_jumprelu(sae)
    assert out.exact
    save_sae(out.sae, tmp_path / arch)
    assert json.loads((tmp_path / arch / "cfg.json").read_text())["architecture"] == "jumprelu"
    back = load_sae(tmp_path / arch)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / arch), device="cpu")
    x = torch.randn(1024, 16)
    with torch.no_grad():
        f_src = sae.encode(x)
        assert float((f_src > 0).float().mean()) > 0.01
        for f in (back.encode(x), theirs.encode(x)):
            # fp32: the gated export multiplies e^r into W_enc, so a token within rounding of its threshold
            # may flip; none does on these inputs, and the values agree to fp32 rounding
            assert torch.equal(f > 0, f_src > 0)
            torch.testing.assert_close(f, f_src, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs(x), sae(x), rtol=1e-5, atol=1e-5)


def test_topk_export_needs_a_threshold_and_calibrates_near_k():
    sae = _sae("topk")
    with pytest.raises(AlignlabError, match="--threshold or --acts"):
        to_jumprelu(sae)
    g = torch.Generator().manual_seed(5)
    batches = [torch.randn(512, 16, generator=g) for _ in range(8)]
    theta = estimate_topk_threshold(sae, batches)
    out = to_jumprelu(sae, theta)
    assert not out.exact and out.sae.cfg.extra["exported_from"] == "topk"
    report = compare_on(sae, out.sae, batches)
    assert report["l0_src"] == pytest.approx(4.0)
    assert 0.5 * 4 < report["l0_out"] < 2 * 4  # a global threshold gives L0 near k on the same data


def test_cli_export_gated_and_topk_from_a_cache(tmp_path, capsys):
    gated = _gated_with_negative_thresholds(torch.float32)
    save_sae(gated, tmp_path / "g")
    assert main(["sae", "export", str(tmp_path / "g"), "--to", "jumprelu", "--out", str(tmp_path / "gj")]) == 0
    assert "gated -> jumprelu (exact)" in capsys.readouterr().out
    x = torch.randn(256, 16)
    torch.testing.assert_close(load_sae(tmp_path / "gj")(x), gated(x), rtol=1e-5, atol=1e-5)

    from alignlab.models.tiny import tiny_model

    model, tok = tiny_model("llama", seed=0)
    model_dir = tmp_path / "tiny"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Paragraph {i}: words about item {i * 17}, more words." * 3 for i in range(60)))
    acts = tmp_path / "acts"
    assert main(["sae", "cache", str(model_dir), "--layer", "1", "--tokens", "800", "--out", str(acts),
                 "--text", str(text), "--split", "all", "--context-size", "24", "--device", "cpu",
                 "--cache-dtype", "float32"]) == 0
    topk = build_sae(SAEConfig("topk", 64, 256, k=8, hook_point="resid_post.1", hook_layer=1))
    save_sae(topk, tmp_path / "t")
    capsys.readouterr()
    assert main(["sae", "export", str(tmp_path / "t"), "--out", str(tmp_path / "tj"), "--acts", str(acts),
                 "--batch-size", "200", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exact"] is False and report["threshold"] > 0 and report["l0_src"] == pytest.approx(8.0)
    assert 4 < report["l0_out"] < 16
    assert load_sae(tmp_path / "tj").cfg.architecture == "jumprelu"


def test_help_for_new_subcommands(capsys):
    for cmd in ("export", "convert"):
        with pytest.raises(SystemExit) as exc:
            main(["sae", cmd, "--help"])
        assert exc.value.code == 0
        assert "usage: alignlab sae " + cmd in capsys.readouterr().out
