"""Direction and edit variants (issue 13 §3): projected, ACE, norm-preserving biprojected."""

import copy
import json

import torch

from alignlab.cli import main
from alignlab.models.anatomy import map_model
from alignlab.models.hooks import hook_context
from alignlab.models.tiny import tiny_model
from alignlab.refusal.config import EditConfig
from alignlab.refusal.edit import orthogonalize
from alignlab.refusal.variants import ablate_affine, layer_directions, project_out_mean

SMALL = ["--n-train", "6", "--n-val", "4", "--n-test-harmful", "3", "--n-test-harmless", "3",
         "--eval-max-new-tokens", "6", "--eval-allow-short", "--kl-max", "100", "--induce-min=-1e9",
         "--screen-n", "2", "--full-k", "3", "--batch-size", "8", "--device", "cpu", "--no-export"]


def test_projected_candidates_are_orthogonal_to_their_harmless_mean():
    g = torch.Generator().manual_seed(0)
    r, mean = torch.randn(2, 3, 16, generator=g, dtype=torch.float64), torch.randn(2, 3, 16, generator=g,
                                                                                       dtype=torch.float64)
    p = project_out_mean(r, mean)
    assert (p * mean).sum(-1).abs().max() < 1e-12
    # what is left of r is its part orthogonal to the mean: projecting again changes nothing
    torch.testing.assert_close(project_out_mean(p, mean), p)


def test_ace_pins_the_stream_to_the_harmless_mean():
    model, _ = tiny_model("llama")
    anatomy = map_model(model)
    g = torch.Generator().manual_seed(1)
    r = torch.randn(64, generator=g)
    means = torch.randn(anatomy.n_layers, 64, generator=g)
    r_hat = r / r.norm()
    seen = {}

    def grab(x, layer):
        seen[layer] = (x.float() @ r_hat)  # [batch, seq]
        return None

    ids = torch.randint(5, 290, (2, 7), generator=g)
    capture = [("block_in", lay, grab) for lay in range(anatomy.n_layers)]
    with torch.no_grad(), ablate_affine(model, r, means), hook_context(model, capture, anatomy):
        model(input_ids=ids)
    # our capture hooks run after ACE's pre-hooks: the stream's r-component equals μ_l·r̂ at every block
    for layer, comp in seen.items():
        torch.testing.assert_close(comp, torch.full_like(comp, float(means[layer] @ r_hat)), atol=1e-4, rtol=0)


def test_biprojected_edit_preserves_column_norms_and_removes_per_layer_direction():
    model, _ = tiny_model("llama")
    anatomy = map_model(model)
    g = torch.Generator().manual_seed(2)
    r = torch.randn(64, generator=g)
    means = torch.randn(anatomy.n_layers, 64, generator=g)
    edited = copy.deepcopy(model)
    rep = orthogonalize(edited, r, EditConfig(norm_preserve="biprojected"), layer_means=means)
    assert rep.exact is False
    dirs = layer_directions(r, means)
    for block in anatomy.block_maps:
        for writer in block.writers:
            old = model.get_submodule(writer.name).weight.double()
            new = edited.get_submodule(writer.name).weight.double()
            torch.testing.assert_close(new.norm(dim=0), old.norm(dim=0))  # column (write-vector) norms kept
            assert (dirs[block.index] @ new).abs().max() < 1e-5  # no write along that layer's r
            assert abs(float(dirs[block.index] @ means[block.index].double())) < 1e-9


def _run(tiny_dir, out, *extra):
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL, *extra]) == 0
    return json.loads((out / "report.json").read_text())


def test_variants_end_to_end(tiny_dir, tmp_path):
    ace = _run(tiny_dir, tmp_path / "ace", "--direction", "ace", "--norm-preserve", "biprojected")
    assert ace["selected"]["affine"] is True and ace["exact_equivalence"] is False
    assert any("ACE" in n for n in ace["edit"]["notes"])
    projected = _run(tiny_dir, tmp_path / "proj", "--direction", "projected")
    assert projected["exact_equivalence"] is True and projected["selected"]["affine"] is False
    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "proj" / "directions.safetensors"))
    d = load_file(str(tmp_path / "proj" / "direction.safetensors"))["direction"]
    sel = projected["selected"]
    mean = t["mean_harmless"][sel["position"], sel["layer"]]
    assert abs(float(d @ mean)) < 1e-8 * float(d.norm() * mean.norm()) + 1e-12


def test_cosmic_low_layers_and_choice(tiny_dir, tmp_path):
    from alignlab.refusal.cosmic import low_similarity_layers

    harmful = torch.zeros(2, 10, 4)
    harmless = torch.zeros(2, 10, 4)
    harmful[..., 0], harmless[..., 0] = 1.0, 1.0
    harmless[:, 7, 1] = 5.0  # layer 7 is where the two classes differ most
    assert low_similarity_layers(harmful, harmless) == [7]
    report = _run(tiny_dir, tmp_path / "cosmic", "--select", "cosmic")
    sel = json.loads((tmp_path / "cosmic" / "selection.json").read_text())
    assert report["selection_method"] == "cosmic" and sel["method"] == "cosmic"
    best = max(sel["cosmic"]["full"], key=lambda s: (s["comply"] + s["refuse"], -s["layer"]))
    assert (report["selected"]["layer"], report["selected"]["position"]) == (best["layer"], best["position"])
    assert -1 <= report["selected"]["cosmic_comply"] <= 1
    assert len(sel["cosmic"]["screened"]) == report["template"]["n_eoi"] * 2  # every position, layers 0-1
