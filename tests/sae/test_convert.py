"""Foreign formats (spec §6, §10 "Foreign formats"): sparsify and dictionary_learning checkpoints built from
their documented layouts load and reproduce the source library's forward (transcribed below from
sparsify/sparse_coder.py + fused_encoder.py and dictionary_learning/dictionary.py + trainers/*.py)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn.functional import relu

from alignlab.cli import main
from alignlab.errors import AlignlabError
from alignlab.sae import SAEConfig, build_sae, load_sae
from alignlab.sae.convert import convert, detect_format, read_saes
from alignlab.sae.dictlearn_format import load_dictlearn
from alignlab.sae.sparsify_format import load_sparsify, save_sparsify

D, N, K = 16, 64, 4
G = torch.Generator().manual_seed(0)


def _r(*shape, scale=0.3):
    return torch.randn(*shape, generator=G) * scale


# ----- sparsify -----------------------------------------------------------------------------------------------

def sparsify_reference(sd, k, x):
    """SparseCoder.forward (autoencoding): top-k of ReLU(Linear(x - b_dec)), decode = Σ acts W_dec[idx] + b_dec."""
    pre = relu((x - sd["b_dec"]) @ sd["encoder.weight"].T + sd["encoder.bias"])
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, idx, vals) @ sd["W_dec"] + sd["b_dec"]


def _sparsify_hookpoint(d, **cfg_extra):
    d.mkdir(parents=True)
    sd = {"encoder.weight": _r(N, D), "encoder.bias": _r(N, scale=0.1), "W_dec": _r(N, D), "b_dec": _r(D)}
    save_file(sd, str(d / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": 4, "normalize_decoder": True, "num_latents": 0, "k": K,
           "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": D, **cfg_extra}
    (d / "cfg.json").write_text(json.dumps(cfg))
    return sd


def test_sparsify_run_converts_per_hookpoint_and_reproduces_its_forward(tmp_path):
    import sae_lens

    run = tmp_path / "run"
    sds = {h: _sparsify_hookpoint(run / h) for h in ("layers.3", "layers.5.mlp")}
    (run / "config.json").write_text(json.dumps({"model": "EleutherAI/pythia-70m", "batch_size": 8}))
    assert detect_format(run) == "sparsify" and detect_format(run / "layers.3") == "sparsify"
    _sparsify_hookpoint(tmp_path / "elsewhere" / "layers.9")
    (run / "layers.9").symlink_to(tmp_path / "elsewhere" / "layers.9")  # resolves outside the run: ignored
    written = convert(run, tmp_path / "out")
    assert sorted(p.name for p in written) == ["layers.3", "layers.5.mlp"]
    x = torch.randn(300, D)
    for hook, (name, sd) in zip(("resid_post.3", "mlp_out.5"), sds.items()):
        ours = load_sae(tmp_path / "out" / name)
        assert (ours.cfg.architecture, ours.cfg.hook_point, ours.cfg.model) == ("topk", hook, "EleutherAI/pythia-70m")
        assert ours.cfg.extra["source_format"] == "sparsify"
        want = sparsify_reference(sd, K, x)
        with torch.no_grad():
            assert float((ours(x) - want).abs().max()) < 1e-5
            theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "out" / name), device="cpu")
            assert float((theirs(x) - want).abs().max()) < 1e-5


def test_sparsify_writer_round_trip_and_refusals(tmp_path):
    sae = build_sae(SAEConfig("topk", D, N, k=K, hook_point="resid_post.1", hook_layer=1))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(_r(*p.shape, scale=0.1))
    save_sparsify(sae, tmp_path / "layers.1")
    back = load_sparsify(tmp_path / "layers.1")
    x = torch.randn(200, D)
    with torch.no_grad():
        assert torch.equal(back(x), sae(x))
        sd = load_file(str(tmp_path / "layers.1" / "sae.safetensors"))
        assert float((sparsify_reference(sd, K, x) - sae(x)).abs().max()) < 1e-5
    with pytest.raises(AlignlabError, match="sparsify stores TopK SAEs"):
        save_sparsify(build_sae(SAEConfig("gated", D, N)), tmp_path / "g")
    _sparsify_hookpoint(tmp_path / "skip", skip_connection=True)
    with pytest.raises(AlignlabError, match="skip_connection=true") as e:
        load_sparsify(tmp_path / "skip")
    assert "\n" not in str(e.value)


# ----- dictionary_learning ------------------------------------------------------------------------------------

def _dl_reference(cls, sd, x):
    """dictionary_learning forward per dict_class (inference defaults)."""
    if cls == "AutoEncoder":
        return relu((x - sd["bias"]) @ sd["encoder.weight"].T + sd["encoder.bias"]) @ sd["decoder.weight"].T + sd["bias"]
    if cls == "AutoEncoderNew":
        f = relu(x @ sd["encoder.weight"].T + sd["encoder.bias"])
        return f @ sd["decoder.weight"].T + sd["decoder.bias"]
    if cls == "GatedAutoEncoder":
        x_enc = (x - sd["decoder_bias"]) @ sd["encoder.weight"].T
        f = (x_enc + sd["gate_bias"] > 0).float() * relu(sd["r_mag"].exp() * x_enc + sd["mag_bias"])
        return f @ sd["decoder.weight"].T + sd["decoder_bias"]
    if cls == "JumpReluAutoEncoder":
        pre = x @ sd["W_enc"] + sd["b_enc"]
        return relu(pre * (pre > sd["threshold"])) @ sd["W_dec"] + sd["b_dec"]
    if cls == "AutoEncoderTopK":
        post = relu((x - sd["b_dec"]) @ sd["encoder.weight"].T + sd["encoder.bias"])
        top = post.topk(int(sd["k"]), sorted=False, dim=-1)
        f = torch.zeros_like(post).scatter_(-1, top.indices, top.values)
        return f @ sd["decoder.weight"].T + sd["b_dec"]
    if cls == "BatchTopKSAE":
        post = relu((x - sd["b_dec"]) @ sd["encoder.weight"].T + sd["encoder.bias"])
        return (post * (post > sd["threshold"])) @ sd["decoder.weight"].T + sd["b_dec"]
    post = relu((x - sd["b_dec"]) @ sd["W_enc"] + sd["b_enc"])  # MatryoshkaBatchTopKSAE
    return (post * (post > sd["threshold"])) @ sd["W_dec"] + sd["b_dec"]


def _dl_state(cls):
    lin = {"encoder.weight": _r(N, D), "encoder.bias": _r(N, scale=0.1), "decoder.weight": _r(D, N)}
    par = {"W_enc": _r(D, N), "b_enc": _r(N, scale=0.1), "W_dec": _r(N, D), "b_dec": _r(D)}
    thr = {"k": torch.tensor(K, dtype=torch.int), "threshold": torch.tensor(0.3)}
    return {
        "AutoEncoder": {**lin, "bias": _r(D)},
        "AutoEncoderNew": {**lin, "decoder.bias": _r(D)},
        "GatedAutoEncoder": {"decoder_bias": _r(D), "encoder.weight": _r(N, D), "r_mag": _r(N), "gate_bias": _r(N),
                             "mag_bias": _r(N), "decoder.weight": _r(D, N)},
        "JumpReluAutoEncoder": {**par, "threshold": torch.rand(N, generator=G) * 0.4 - 0.1},  # a few theta < 0
        "AutoEncoderTopK": {**lin, "b_dec": _r(D), **thr},
        "BatchTopKSAE": {**lin, "b_dec": _r(D), **thr},
        "MatryoshkaBatchTopKSAE": {**par, **thr, "group_sizes": torch.tensor([8, 24, 32])},
    }[cls]


DL_CLASSES = ["AutoEncoder", "AutoEncoderNew", "GatedAutoEncoder", "JumpReluAutoEncoder", "AutoEncoderTopK",
              "BatchTopKSAE", "MatryoshkaBatchTopKSAE"]
DL_ARCH = {"AutoEncoder": "standard", "AutoEncoderNew": "standard", "GatedAutoEncoder": "gated",
           "JumpReluAutoEncoder": "jumprelu", "AutoEncoderTopK": "topk", "BatchTopKSAE": "batchtopk",
           "MatryoshkaBatchTopKSAE": "matryoshka"}


def _trainer_dir(tmp_path, cls, sd):
    d = tmp_path / "trainer_0"
    d.mkdir()
    torch.save(sd, d / "ae.pt")
    trainer = {"dict_class": cls, "trainer_class": "BatchTopKTrainer" if "BatchTopK" in cls else "T",
               "activation_dim": D, "dict_size": N, "layer": 3, "lm_name": "EleutherAI/pythia-70m-deduped",
               "submodule_name": "resid_post_layer_3"}
    (d / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"ctx_len": 128}}))
    return d


@pytest.mark.parametrize("cls", DL_CLASSES)
def test_dictionary_learning_classes_reproduce_their_forward(cls, tmp_path):
    sd = _dl_state(cls)
    d = _trainer_dir(tmp_path, cls, sd)
    with pytest.raises(AlignlabError, match="--allow-torch-load") as e:
        load_dictlearn(d)
    assert "\n" not in str(e.value)
    sae = load_dictlearn(d, allow_torch_load=True)
    assert (sae.cfg.architecture, sae.cfg.hook_point, sae.cfg.hook_layer) == (DL_ARCH[cls], "resid_post.3", 3)
    x = torch.randn(400, D)
    with torch.no_grad():
        want = _dl_reference(cls, sd, x)
        assert float((sae(x) - want).abs().max()) < 1e-5
    out = convert(d, tmp_path / "out", allow_torch_load=True)[0]  # and through a SAELens file
    with torch.no_grad():
        assert float((load_sae(out)(x) - want).abs().max()) < 1e-5


def test_dictionary_learning_checkpoints_backups_and_pickles(tmp_path):
    sd = _dl_state("GatedAutoEncoder")
    d = _trainer_dir(tmp_path, "GatedAutoEncoder", sd)
    (d / "checkpoints").mkdir()
    torch.save(sd, d / "checkpoints" / "ae_100.pt")
    x = torch.randn(100, D)
    ckpt = load_dictlearn(d / "checkpoints" / "ae_100.pt", allow_torch_load=True)  # config.json two levels up
    assert ckpt.cfg.model == "EleutherAI/pythia-70m-deduped"
    with torch.no_grad():
        assert float((ckpt(x) - _dl_reference("GatedAutoEncoder", sd, x)).abs().max()) < 1e-5
    # a mid-run backup: weights trained on x / norm_factor; loaded, they read raw x and return raw units
    nf = 4.0
    torch.save({"step": 7, "ae": sd, "config": {"dict_class": "GatedAutoEncoder"}, "norm_factor": nf},
               tmp_path / "backup.pt")
    backup = load_dictlearn(tmp_path / "backup.pt", allow_torch_load=True)
    with torch.no_grad():
        want = nf * _dl_reference("GatedAutoEncoder", sd, x / nf)
        assert float((backup(x) - want).abs().max()) < 1e-5

    import datetime  # any non-tensor object stands in for code a pickle could run

    torch.save({"ae": datetime.date(2024, 1, 1)}, tmp_path / "evil.pt")
    with pytest.raises(AlignlabError, match="refusing to unpickle"):
        load_dictlearn(tmp_path / "evil.pt", allow_torch_load=True)


def test_cli_convert_and_detection_errors(tmp_path, capsys):
    sd = _dl_state("AutoEncoderTopK")
    d = _trainer_dir(tmp_path, "AutoEncoderTopK", sd)
    assert main(["sae", "convert", str(d), "--out", str(tmp_path / "c")]) == 2
    assert "--allow-torch-load" in capsys.readouterr().err
    assert main(["sae", "convert", str(d), "--out", str(tmp_path / "c"), "--allow-torch-load"]) == 0
    assert main(["sae", "convert", str(tmp_path / "c"), "--to", "sparsify", "--out", str(tmp_path / "s")]) == 0
    x = torch.randn(50, D)
    with torch.no_grad():
        want = _dl_reference("AutoEncoderTopK", sd, x)
        assert float((read_saes(tmp_path / "s")[0][1](x) - want).abs().max()) < 1e-5
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlignlabError, match="pass --from"):
        detect_format(tmp_path / "empty")
