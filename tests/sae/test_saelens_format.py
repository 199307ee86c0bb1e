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
        if arch == "jumprelu":
            sae.threshold.abs_()  # a trained theta is >= 0 (projected after every step)
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
    assert raw["metadata"]["hook_name"] == "blocks.2.hook_resid_post" and raw["metadata"]["model_name"] == "m"
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
    assert (got.cfg.hook_point, got.cfg.hook_layer) == ("resid_post.2", 2)
    assert torch.equal(got(x), sae(x))
    pre = tmp_path / "pre"
    pre.mkdir()
    save_file(tensors, str(pre / "sae_weights.safetensors"))
    (pre / "cfg.json").write_text(json.dumps({
        "d_in": 16, "d_sae": 64, "hook_point": "blocks.1.hook_resid_pre", "hook_layer": 1,
        "activation_fn_str": "relu", "model_name": "gpt2", "apply_b_dec_to_input": True}))
    old = load_sae(pre)
    assert (old.cfg.hook_point, old.cfg.hook_layer, old.cfg.model) == ("resid_pre.1", 1, "gpt2")
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


@pytest.mark.parametrize(("point", "layer", "tl"), [
    ("resid_post.15", -1, "blocks.15.hook_resid_post"), ("block_in", 3, "blocks.3.hook_resid_pre"),
    ("attn_out.0", 0, "blocks.0.hook_attn_out"), ("mlp_out", 7, "blocks.7.hook_mlp_out")])
def test_hook_name_is_written_as_transformer_lens_and_read_in_both_forms(point, layer, tl, tmp_path):
    sae = build_sae(SAEConfig("standard", 16, 64, hook_point=point, hook_layer=layer))
    save_sae(sae, tmp_path / "s")
    raw = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert raw["metadata"]["hook_name"] == tl
    site, n = tl.removeprefix("blocks.").split(".hook_")[::-1]
    for name in (tl, f"{site}.{n}"):  # a foreign file (no alignlab metadata) in either spelling
        raw["metadata"] = {"sae_lens_version": "6.54.0", "hook_name": name}
        (tmp_path / "s" / "cfg.json").write_text(json.dumps(raw))
        got = load_sae(tmp_path / "s")
        assert (got.cfg.hook_point, got.cfg.hook_layer) == (f"{site}.{n}", int(n))
    odd = build_sae(SAEConfig("standard", 16, 64, hook_point="block_out", hook_layer=-1))
    save_sae(odd, tmp_path / "o")  # no layer recorded: no TL name to give, the address is kept
    assert json.loads((tmp_path / "o" / "cfg.json").read_text())["metadata"]["hook_name"] == "block_out"


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_real_sae_lens_loads_our_files(arch, tmp_path):
    import sae_lens  # a dev dependency: missing means a failure, not a skip

    ours = _trained_like(arch)
    save_sae(ours, tmp_path / arch)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / arch), device="cpu")
    x = torch.randn(20, 16)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.encode(x), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-6, atol=1e-6)
    assert theirs.cfg.metadata.hook_name == "blocks.2.hook_resid_post"


SAELENS_TRAINING = {  # SAELens training architecture -> (config class name, extra fields)
    "standard": ("StandardTrainingSAEConfig", {}),
    "gated": ("GatedTrainingSAEConfig", {}),
    "jumprelu": ("JumpReLUTrainingSAEConfig", {}),
    "topk": ("TopKTrainingSAEConfig", {"k": 4}),  # rescale_acts_by_decoder_norm=True is SAELens's default
    "topk_unscaled": ("TopKTrainingSAEConfig", {"k": 4, "rescale_acts_by_decoder_norm": False}),
    "batchtopk": ("BatchTopKTrainingSAEConfig", {"k": 4}),
    "matryoshka_batchtopk": ("MatryoshkaBatchTopKTrainingSAEConfig", {"k": 4, "matryoshka_widths": [16, 64]}),
}


@pytest.mark.parametrize("arch", sorted(SAELENS_TRAINING))
def test_we_load_real_sae_lens_files(arch, tmp_path):
    import sae_lens

    cls_name, extra = SAELENS_TRAINING[arch]
    cfg = getattr(sae_lens, cls_name)(d_in=16, d_sae=64, **extra)
    trainer_cls = sae_lens.TrainingSAE.get_sae_class_for_architecture(cfg.architecture())
    torch.manual_seed(1)
    sae = trainer_cls(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        sae.W_dec.mul_(torch.rand(64, 1) + 0.5)  # decoder norms away from 1, as after training
        if hasattr(sae, "topk_threshold"):
            sae.topk_threshold = torch.tensor(0.2, dtype=sae.topk_threshold.dtype)
        if hasattr(sae, "log_threshold"):
            sae.log_threshold.fill_(-1.5)
    sae.cfg.metadata.hook_name = "blocks.3.hook_mlp_out"
    sae.save_inference_model(tmp_path / arch)
    raw = json.loads((tmp_path / arch / "cfg.json").read_text())
    assert raw.get("rescale_acts_by_decoder_norm", False) is (arch == "topk")  # the flag SAELens writes
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / arch), device="cpu")
    ours = load_sae(tmp_path / arch)
    assert (ours.cfg.hook_point, ours.cfg.hook_layer) == ("mlp_out.3", 3)
    x = torch.randn(256, 16)
    with torch.no_grad():
        f_t, f_o = theirs.encode(x), ours.encode(x)
        assert 0 < int((f_t > 0).sum()) < f_t.numel()  # a real sparse code, not all-zero or dense
        assert torch.equal(f_t > 0, f_o > 0)
        torch.testing.assert_close(f_o, f_t, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
        if arch.startswith("topk"):  # the norm fold reproduces the SAELens training module's function too
            torch.testing.assert_close(ours(x), sae(x), rtol=1e-5, atol=1e-6)
