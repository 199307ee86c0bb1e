import argparse
import json

import numpy as np
import pytest

from alignlab.errors import AlignlabError
from alignlab.forecast.modes import GFIX
from alignlab.forecast.posterior import UpdateModel, posterior_quantiles
from alignlab.forecast.requirements import RequirementInputs, RequirementsConfig, sample_requirements
from alignlab.forecast.scaling import BESIROGLU2024
from alignlab.forecast.scenario import (
    build_scenario,
    custom_maths,
    provenance,
    provenance_line,
    read_inputs_arg,
    requirement_inputs_from_dict,
)
from alignlab.forecast.timeline import TimelineInputs


def _args(**kw):
    base = dict(inputs=None, no_update=False, no_scale=False, k_units=None, g_formula=None, inversion=None)
    base.update(criterion=None, liu_r=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_inputs_inline_or_file(tmp_path):
    assert read_inputs_arg('{"decay_exponent": 0.5}') == {"decay_exponent": 0.5}
    f = tmp_path / "i.json"
    f.write_text(json.dumps({"starting_max_spend": 600}))
    assert read_inputs_arg(str(f)) == {"starting_max_spend": 600}
    with pytest.raises(AlignlabError, match="cannot read JSON"):
        read_inputs_arg('{"decay_exponent": ')
    with pytest.raises(AlignlabError, match="JSON object"):
        read_inputs_arg(str(f.with_name("missing.json")))


def test_scenario_splits_inputs_and_records_overrides():
    sc = build_scenario(
        _args(
            inputs='{"decay_exponent": 0.5, "scale_factor": 0.8, "starting_max_spend": 600}', no_scale=True
        ),
        TimelineInputs(),
    )
    assert sc.requirement.update.decay_exponent == 0.5
    assert sc.requirement.scale_factor == 0.8 and sc.requirement.scale_tai_requirements is False
    assert sc.requirement.variant == "updated"
    assert sc.timeline.starting_max_spend.lo == 600
    assert sc.overrides == {
        "decay_exponent": 0.5,
        "scale_factor": 0.8,
        "starting_max_spend": 600,
        "scale_tai_requirements": False,
    }
    cfg = RequirementsConfig(samples=100, seed=4)
    line = provenance_line(provenance("head", cfg, sc))
    assert line.startswith("preset head + decay_exponent=0.5, scale_factor=0.8, starting_max_spend=600")
    assert "seed 4, 100 samples" in line and "requirement updated" in line


@pytest.mark.parametrize(
    "obj, match",
    [
        ({"decay_exponent": 0}, "decay_exponent must be a positive"),
        ({"decay_exponent": -0.3}, "decay_exponent must be a positive"),
        ({"decay_exponent": "fast"}, "must be a number"),
        ({"scale_factor": 1.5}, r"scale_factor must be in \(0, 1\]"),
        ({"scale_factor": 0}, r"scale_factor must be in \(0, 1\]"),
        ({"update_on_no_tai": "yes"}, "true or false"),
        ({"observed_runs": [[25, -1]]}, "observed_runs"),
        ({"slowdown": {"kind": "normal", "width": 70, "lo": 5, "hi": 9}}, "lognormal or a positive delta"),
    ],
)
def test_requirement_inputs_validated(obj, match):
    with pytest.raises(AlignlabError, match=match):
        requirement_inputs_from_dict(obj)


def test_maths_options_make_a_custom_mode():
    assert custom_maths({}, 0.9) is None
    m = custom_maths({"k_units": "bits"}, 0.9)
    assert m.name == "custom" and (m.k_units, m.g_formula, m.inversion) == ("bits", "hoffmann", "closed")
    assert custom_maths({"criterion": "liu", "liu_r": 20.0}, 0.8).describe()["liu_r"] == 20.0
    for bad in ({"k_units": "furlongs"}, {"criterion": "bayes"}, {"liu_r": 1.0}, {"inversion": "brent"}):
        with pytest.raises(AlignlabError):
            custom_maths(bad, 0.9)


def test_decay_exponent_moves_the_update():
    cfg = RequirementsConfig(samples=20_000, seed=0, params="besiroglu2024")
    base = sample_requirements(BESIROGLU2024, GFIX, cfg)
    strong = sample_requirements(
        BESIROGLU2024, GFIX, cfg, RequirementInputs(update=UpdateModel(decay_exponent=1.0))
    )
    np.testing.assert_array_equal(base.raw, strong.raw)  # the raw draws do not depend on the update
    # a steeper arrival-rate decay makes "no TAI at 1e25" rule out less of the upper tail: median falls
    want = posterior_quantiles(strong.prior_mu, strong.prior_sigma, [0.5], UpdateModel(decay_exponent=1.0))[0]
    assert np.median(strong.updated) == pytest.approx(want, abs=0.1)
    assert np.median(base.updated) - np.median(strong.updated) == pytest.approx(0.44, abs=0.1)


def test_scale_factor_one_is_no_adjustment():
    cfg = RequirementsConfig(samples=500, seed=1, params="besiroglu2024")
    req = sample_requirements(BESIROGLU2024, GFIX, cfg, RequirementInputs(scale_factor=1.0))
    np.testing.assert_array_equal(req.variant("updated_scaled"), req.variant("updated"))
    req = sample_requirements(
        BESIROGLU2024, GFIX, cfg, RequirementInputs(scale_factor=0.5, scale_anchor=30.0)
    )
    np.testing.assert_allclose(req.variant("scaled"), 0.5 * (req.raw - 30.0) + 30.0)
