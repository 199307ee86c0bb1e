"""SAELens v6 format: bit-exact round trip, cfg/tensor layout, pre-6.0 configs, errors, and real sae-lens."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from alignlab.errors import AlignlabError
from alignlab.sae import REGISTRY, SAEConfig, build_sae, load_sae, save_sae

EXTRA = {"topk": {"k": 4}, "batchtopk": {"k": 4}, "matryoshka": {"k": 4, "matryoshka_widths": (16, 64)}}
SHAPES = {"W_enc": (16, 64), "W_dec": (64, 16), "b_dec": (16,), "b_enc": (64,), "b_gate": (64,), "b_mag": (64,),
          "r_mag": (64,), "threshold": (64,)}


def _trained_like(arch, seed=0):
    sae = build_sae(SAEConfig(architecture=arch, d_in=16, d_sae=64, model="m", hook_point="resid_post.2",
                              hook_layer=2, **EXTRA.get(arch, {})))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        if hasattr(sae, "threshold") and not isinstance(sae.threshold, torch.nn.Parameter) and arch != "jumprelu":
            sae.threshold.fill_(0.05)
    return sae.eval()


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_round_trip_is_bit_exact(arch, tmp_path):
    sae = _trained_like(arch)
    save_sae(sae, tmp_path / arch)
    back = load_sae(tmp_path / arch)
    assert type(back) is type(sae)
    for k, v in sae.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    x = torch.randn(12, 16)
    assert torch.equal(back(x), sae(x))
    raw = json.loads((tmp_path / arch / "cfg.json").read_text())
    for key in ("d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations",
                "reshape_activations", "architecture", "metadata"):
        assert key in raw
    assert raw["metadata"]["hook_name"] == "resid_post.2" and raw["metadata"]["model_name"] == "m"
    assert raw["metadata"]["sae_lens_version"].startswith("6.")
    tensors = load_file(str(tmp_path / arch / "sae_weights.safetensors"))
    for name, t in tensors.items():
        assert tuple(t.shape) == SHAPES[name], name
    expected = {"gated": "gated", "topk": "topk", "standard": "standard", "lp": "standard"}.get(arch, "jumprelu")
    assert raw["architecture"] == expected


def test_input_scale_is_folded_on_save(tmp_path):
    sae = _trained_like("gated")
    sae.cfg = sae.cfg.replace(input_scale=2.5)
    x = torch.randn(9, 16)
    scaled_out = sae(x * 2.5) / 2.5  # the SAE trained on scaled inputs, mapped back to raw units
    save_sae(sae, tmp_path / "g")
    back = load_sae(tmp_path / "g")
    assert back.cfg.input_scale == 1.0
    torch.testing.assert_close(back(x), scaled_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(back.encode(x), sae.encode(x * 2.5), rtol=1e-5, atol=1e-6)


def test_reads_plain_saelens_v6_and_pre_v6_folders(tmp_path):
    sae = _trained_like("standard")
    tensors = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    v6 = tmp_path / "v6"
    v6.mkdir()
    save_file(tensors, str(v6 / "sae_weights.safetensors"))
    (v6 / "cfg.json").write_text(json.dumps({
        "d_in": 16, "d_sae": 64, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "reshape_activations": "none", "architecture": "standard",
        "metadata": {"sae_lens_version": "6.18.0", "hook_name": "blocks.2.hook_resid_post", "unknown": 1}}))
    x = torch.randn(5, 16)
    got = load_sae(v6)
    assert got.cfg.hook_point == "blocks.2.hook_resid_post"
    assert torch.equal(got(x), sae(x))
    pre = tmp_path / "pre"
    pre.mkdir()
    save_file(tensors, str(pre / "sae_weights.safetensors"))
    (pre / "cfg.json").write_text(json.dumps({
        "d_in": 16, "d_sae": 64, "hook_point": "blocks.1.hook_resid_pre", "hook_layer": 1,
        "activation_fn_str": "relu", "model_name": "gpt2", "apply_b_dec_to_input": True}))
    old = load_sae(pre)
    assert (old.cfg.hook_point, old.cfg.hook_layer, old.cfg.model) == ("blocks.1.hook_resid_pre", 1, "gpt2")
    assert torch.equal(old(x), sae(x))


def test_wrong_architecture_or_width_is_one_line_error(tmp_path):
    save_sae(_trained_like("gated"), tmp_path / "g")
    want = SAEConfig(architecture="standard", d_in=16, d_sae=64)
    with pytest.raises(AlignlabError, match="holds a gated SAE") as e:
        load_sae(tmp_path / "g", expect=want)
    assert "\n" not in str(e.value)
    with pytest.raises(AlignlabError, match="d_sae=128"):
        load_sae(tmp_path / "g", expect=SAEConfig(architecture="gated", d_in=16, d_sae=128))
    raw = json.loads((tmp_path / "g" / "cfg.json").read_text())
    del raw["metadata"]["alignlab"]
    raw["architecture"] = "standard"  # cfg says standard, weights are gated
    (tmp_path / "g" / "cfg.json").write_text(json.dumps(raw))
    with pytest.raises(AlignlabError, match="does not match the weights"):
        load_sae(tmp_path / "g")
    raw["architecture"], raw["d_sae"] = "gated", 32
    (tmp_path / "g" / "cfg.json").write_text(json.dumps(raw))
    with pytest.raises(AlignlabError, match="shape"):
        load_sae(tmp_path / "g")
    with pytest.raises(AlignlabError, match="no cfg.json"):
        load_sae(tmp_path)


@pytest.mark.parametrize("arch", ["standard", "gated", "topk", "jumprelu", "batchtopk"])
def test_real_sae_lens_loads_our_files(arch, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    ours = _trained_like(arch)
    save_sae(ours, tmp_path / arch)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / arch), device="cpu")
    x = torch.randn(20, 16)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.encode(x), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-6, atol=1e-6)
