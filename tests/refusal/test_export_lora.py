"""LoRA export of the weight edit (issue 13 §4): PEFT loads the adapter onto the unedited model and the
logits equal the merged (orthogonalised) model's."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from alignlab.errors import AlignlabError
from alignlab.models.anatomy import map_model
from alignlab.models.tiny import FAMILIES, tiny_model
from alignlab.refusal.config import EditConfig
from alignlab.refusal.edit import orthogonalize, untie_head
from alignlab.refusal.export_lora import export_lora, loaded_adapter, lora_factors

pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

POSTNORM = ("gemma2", "gemma3_text", "olmo2")


def _inputs():
    from alignlab.refusal.forward import position_ids

    ids = torch.randint(5, 290, (3, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding, as the pipeline feeds it
    return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids(mask)}, mask.bool()


def _direction():
    return torch.randn(64, generator=torch.Generator().manual_seed(1))


def _logits(model, kw, mask):
    with torch.no_grad():
        return model(**kw).logits[mask]


def _adapter_logits(model, path, kw, mask):
    with loaded_adapter(model, path) as adapted:
        return _logits(adapted, kw, mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_on_unedited_model_equals_merged_edit(family, tmp_path):
    """Every family, post-sublayer norms (policy approximate: W <- Γ⁻¹PΓW, still rank-1) and MoE included."""
    model, _ = tiny_model(family)
    r = _direction()
    merged = copy.deepcopy(model)
    orthogonalize(merged, r)
    kw, mask = _inputs()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = export_lora(model, r, tmp_path / "adapter", {"source_model": family}, probe=kw, reference=merged)
    assert out.max_abs_logit_diff < 1e-5 and out.matches(torch.float32)
    # the unedited model is untouched by saving and by the reload check (PEFT writes biases into the base)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # what a user does: a fresh unedited copy + PeftModel.from_pretrained
    from peft import PeftModel

    fresh, _ = tiny_model(family)
    adapted = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter"))
    edited, base = _logits(adapted, kw, mask), _logits(model, kw, mask)
    torch.testing.assert_close(edited, _logits(merged, kw, mask), atol=1e-5, rtol=1e-5)
    assert (edited - base).abs().max() > 1e-2  # the adapter really changes the model


def test_adapter_holds_rank_one_factors_and_no_full_weights(tmp_path):
    model, _ = tiny_model("gpt2")  # Conv1D writers with biases, tied head, learned position embedding
    anatomy = map_model(model)
    export_lora(model, _direction(), tmp_path / "a", {"source_model": "gpt2"})
    tensors = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    n_modules = len(anatomy.writers()) + 2  # + wte, wpe
    assert sum(".lora_A" in k or ".lora_embedding_A" in k for k in tensors) == n_modules
    for key, t in tensors.items():
        if "lora_A" in key or "lora_embedding_A" in key:
            assert t.shape[0] == 1
        elif "lora_B" in key or "lora_embedding_B" in key:
            assert t.shape == (64, 1)
        else:  # the edited bias vectors of the writers, nothing else
            assert key.endswith(".bias") and t.shape == (64,)
    assert sum(t.numel() for t in tensors.values()) < 0.1 * sum(p.numel() for p in model.parameters())
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["r"] == 1 and config["lora_alpha"] == 1 and config["bias"] == "lora_only"
    provenance = json.loads((tmp_path / "a" / "alignlab_provenance.json").read_text())
    assert provenance["source_model"] == "gpt2" and len(provenance["lora"]["target_modules"]) == n_modules


def test_tied_head_is_left_unedited(tmp_path):
    model, _ = tiny_model("qwen2")
    head = model.lm_head.weight.detach().clone()
    export_lora(model, _direction(), tmp_path / "a", {})
    kw, _mask = _inputs()
    with loaded_adapter(model, tmp_path / "a") as adapted:
        assert torch.equal(adapted.get_output_embeddings().weight, head)
        hidden = adapted(**kw, output_hidden_states=True).hidden_states[0]
    r = _direction() / _direction().norm()
    assert float((hidden @ r).abs().max()) < 1e-5  # the embedding output is r-free


def test_weighted_writers_match_a_weighted_edit(tmp_path):
    model, _ = tiny_model("llama", attention_bias=True, mlp_bias=False)
    anatomy = map_model(model)
    r = _direction()
    rh = r / r.norm()
    gen = torch.Generator().manual_seed(2)
    names = [anatomy.embedding_name] + [w.name for w in anatomy.writers()]
    weights = {n: float(torch.rand((), generator=gen)) for n in names}
    weights[names[1]] = 0.0  # w = 0: the writer is left out of the adapter
    reference = copy.deepcopy(model)
    assert untie_head(reference, map_model(reference))  # tied family: the edit leaves the head as it was
    with torch.no_grad():  # the weighted edit, written out: W <- W - w r(rᵀW), b <- b - w(r·b)r, E <- E - w(Er)rᵀ
        E = reference.get_submodule(names[0]).weight
        E -= weights[names[0]] * torch.outer(E @ rh, rh)
        for n in names[1:]:
            m = reference.get_submodule(n)
            m.weight -= weights[n] * torch.outer(rh, rh @ m.weight)
            if m.bias is not None:
                m.bias -= weights[n] * (m.bias @ rh) * rh
    kw, mask = _inputs()
    diff = export_lora(model, r, tmp_path / "a", {}, weights=weights, probe=kw, reference=reference)
    assert diff.max_abs_logit_diff < 1e-5
    assert names[1] not in json.loads((tmp_path / "a" / "adapter_config.json").read_text())["target_modules"]
    # negative control: the unweighted adapter does not match the weighted edit
    export_lora(model, r, tmp_path / "b", {})
    assert (_adapter_logits(model, tmp_path / "b", kw, mask) - _logits(reference, kw, mask)).abs().max() > 1e-3


@pytest.mark.parametrize("family,left_out", [("mistral", "model.embed_tokens"),
                                              ("mixtral", "model.layers.1.mlp.experts.down_proj")])
def test_negative_control_a_missing_delta_breaks_equality(family, left_out, tmp_path):
    model, _ = tiny_model(family)
    r = _direction()
    merged = copy.deepcopy(model)
    orthogonalize(merged, r)
    kw, mask = _inputs()
    out = export_lora(model, r, tmp_path / "a", {}, weights={left_out: 0.0}, probe=kw, reference=merged)
    assert out.max_abs_logit_diff > 1e-3 and not out.matches(torch.float32)


@pytest.mark.parametrize("family", POSTNORM)
def test_postnorm_policies_naive_and_refuse_are_mirrored(family, tmp_path):
    model, _ = tiny_model(family)
    r = _direction()
    merged = copy.deepcopy(model)
    orthogonalize(merged, r, EditConfig(postnorm="naive"))
    kw, _mask = _inputs()
    out = export_lora(model, r, tmp_path / "a", {}, probe=kw, reference=merged, postnorm="naive")
    assert out.max_abs_logit_diff < 1e-5
    wrong = export_lora(model, r, tmp_path / "b", {}, probe=kw, reference=merged)  # approximate vs naive merge
    assert wrong.max_abs_logit_diff > 1e-3  # negative control: the policies differ, and the check sees it
    with pytest.raises(AlignlabError, match="--postnorm refuse"):
        export_lora(model, r, tmp_path / "c", {}, postnorm="refuse")
    assert not (tmp_path / "c").exists()


def test_bad_inputs_are_one_line_errors(tmp_path):
    from alignlab.refusal.export_lora import check_lora_exportable

    model, _ = tiny_model("mistral")
    with pytest.raises(AlignlabError, match="not residual writers"):
        lora_factors(model, _direction(), weights={"model.layers.0.mlp.up_proj": 1.0})
    with pytest.raises(AlignlabError, match="finite vector"):
        lora_factors(model, torch.full((64,), float("nan")))
    with pytest.raises(AlignlabError, match="norm_preserve"):
        check_lora_exportable(map_model(model), EditConfig(norm_preserve="columns").norm_preserve)


def test_lora_weights_from_layer_weights_match_the_weighted_orthogonalisation(tmp_path):
    from alignlab.refusal.export_lora import writer_weights
    from alignlab.refusal.weights import LayerWeights

    model, _ = tiny_model("gpt2")
    lw = LayerWeights(attn=(0.2, 1.0, 0.0), mlp=(0.7, 0.5, 0.9), embed=0.3)
    r = _direction()
    merged = copy.deepcopy(model)
    orthogonalize(merged, r, weights=lw)
    kw, _mask = _inputs()
    weights = writer_weights(map_model(model), lw)
    assert weights["transformer.wpe"] == 0.3 and weights["transformer.h.1.mlp.c_proj"] == 0.5
    assert export_lora(model, r, tmp_path / "a", {}, weights=weights, probe=kw, reference=merged).max_abs_logit_diff < 1e-5


SMALL = ["--n-train", "6", "--n-val", "4", "--n-test-harmful", "3", "--n-test-harmless", "3",
         "--eval-max-new-tokens", "6", "--eval-allow-short", "--kl-max", "100", "--induce-min=-1e9",
         "--screen-n", "2", "--full-k", "3", "--batch-size", "8", "--device", "cpu"]


def test_refusal_run_export_lora_writes_a_verified_adapter(tiny_dir, tmp_path, monkeypatch, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import alignlab.refusal.export_lora as export_lora_module
    from alignlab.cli import main

    out = tmp_path / "run"
    # an adapter that does not reproduce the merged edit (its embedding delta dropped) fails the run and is deleted
    monkeypatch.setattr(export_lora_module, "writer_weights", lambda anatomy, lw: {anatomy.embedding_name: 0.0})
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL, "--export-lora"]) == 2
    assert "does not reproduce the merged edit" in capsys.readouterr().err and not (out / "adapter").exists()
    monkeypatch.undo()
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL, "--export-lora"]) == 0
    assert "evaluate" in json.loads((out / "report.json").read_text())["reused_stages"]  # resumed, not redone
    export = json.loads((out / "export.json").read_text())
    assert export["adapter_max_abs_logit_diff"] < 1e-5
    assert json.loads((out / "report.json").read_text())["export"]["adapter"] == str(out / "adapter")
    provenance = json.loads((out / "adapter" / "alignlab_provenance.json").read_text())
    assert provenance["source_model"] == str(tiny_dir) and provenance["lora"]["rank"] == 1
    kw, mask = _inputs()
    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), str(out / "adapter"))
    torch.testing.assert_close(_logits(adapted, kw, mask), _logits(merged, kw, mask), atol=1e-5, rtol=1e-5)


def test_export_lora_conflicts_are_one_line_errors(tiny_dir, tmp_path, capsys):
    from alignlab.cli import main

    assert main(["refusal", "run", str(tiny_dir), "--out", str(tmp_path / "r"), "--no-export", "--export-lora"]) != 0
    assert "--no-export" in capsys.readouterr().err
    assert main(["refusal", "run", str(tiny_dir), "--out", str(tmp_path / "r"), *SMALL, "--export-lora",
                 "--norm-preserve", "columns"]) != 0
    assert "norm_preserve" in capsys.readouterr().err
    assert not (tmp_path / "r" / "selection.json").exists()  # refused before the long stages


def test_match_tolerances_by_dtype():
    from alignlab.refusal.export_lora import LoraExport

    ok32 = LoraExport(None, 2e-3, 30.0, 5.0)  # 30 * 1e-4 = 3e-3
    assert ok32.matches(torch.float32) and not LoraExport(None, 4e-3, 30.0, 5.0).matches(torch.float32)
    assert LoraExport(None, 0.7, 30.0, 5.0).matches(torch.bfloat16)  # rounding, as measured on SmolLM2 bf16
    assert not LoraExport(None, 3.0, 30.0, 5.0).matches(torch.bfloat16)  # most of the edit missing
    assert LoraExport(None, None, None, None).matches(torch.float16)  # not checked
