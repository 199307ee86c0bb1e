import pytest
import torch

from alignlab.cli import main
from alignlab.errors import AlignlabError
from alignlab.refusal.massive import mask_dims, massive_dims

SMALL = ["--n-train", "6", "--n-val", "4", "--n-test-harmful", "3", "--n-test-harmless", "3",
         "--eval-max-new-tokens", "6", "--eval-allow-short", "--kl-max", "100", "--induce-min=-1e9",
         "--screen-n", "2", "--full-k", "3", "--batch-size", "8", "--device", "cpu"]


def test_massive_dims_are_found_at_any_position_and_layer():
    means = torch.ones(3, 4, 64)  # [P, L, d], median |coordinate| exactly 1
    means[..., ::2] = -1.0
    means[1, 2, 7] = 500.0  # one (position, layer) only
    means[:, :, 40] = -300.0  # every token, negative
    assert massive_dims(means, 200.0) == [7, 40]
    assert massive_dims(means, 400.0) == [7]
    assert massive_dims(means, 600.0) == []
    assert massive_dims(means, 0.0) == []  # off
    with pytest.raises(AlignlabError, match="--massive must be >= 0"):
        massive_dims(means, -1.0)


def test_mask_dims_zeroes_only_those_coordinates():
    r = torch.randn(2, 3, 8)
    out = mask_dims(r, [1, 5])
    assert torch.equal(out[..., [1, 5]], torch.zeros(2, 3, 2))
    keep = [0, 2, 3, 4, 6, 7]
    assert torch.equal(out[..., keep], r[..., keep]) and out is not r
    assert mask_dims(r, []) is r


def test_refusal_run_keeps_massive_dims_out_of_the_direction(tiny_dir, tmp_path):
    import json

    from safetensors.torch import load_file

    out = tmp_path / "run"
    # a tiny random model has no massive activations; a low ratio flags a few dims to exercise the mask
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL, "--massive", "4", "--no-export"]) == 0
    report = json.loads((out / "report.json").read_text())
    dims = report["massive_dims"]
    saved = load_file(str(out / "directions.safetensors"))  # the unmasked differences of means
    assert dims == massive_dims(saved["mean_harmless"], 4.0) and 0 < len(dims) < 64
    assert saved["r"][..., dims].abs().sum() > 0  # so the mask changes the candidates
    sel = report["selected"]
    direction = load_file(str(out / "direction.safetensors"))["direction"]
    assert torch.equal(direction, mask_dims(saved["r"][sel["position"], sel["layer"]], dims))
