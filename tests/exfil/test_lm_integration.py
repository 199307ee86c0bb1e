"""The embedded default model as reference LM: encode here, decode in a fresh process, exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_default_lm_round_trip_in_fresh_process(tmp_path):
    from alignlab.exfil.coder import compress
    from alignlab.exfil.lm import load_reference_lm

    model = load_reference_lm("smollm2-135m-instruct", wctx=32)  # small window: exercises the sliding cache
    samples = {
        "md": (ROOT / "README.md").read_bytes()[:150],
        "py": (ROOT / "src" / "alignlab" / "exfil" / "arith.py").read_bytes()[:120],
    }
    streams = {"md": 1, "py": 2}  # two lockstep streams: one batched forward serves both
    for name, data in samples.items():
        comp = compress(data, model, streams=streams[name])
        assert comp.stats.streams == streams[name]
        assert not comp.stats.byte_mode and comp.stats.n_tokens > 25
        assert comp.stats.payload_bits <= comp.stats.ideal_bits + 2
        assert comp.stats.payload_bytes < len(data) / 2
        (tmp_path / f"{name}.alc").write_bytes(comp.blob)
    code = (
        "import sys, json; from pathlib import Path\n"
        "from alignlab.exfil.coder import decompress; from alignlab.exfil.lm import load_reference_lm\n"
        "m = load_reference_lm('smollm2-135m-instruct', wctx=32); d = Path(sys.argv[1])\n"
        "for n in ('md', 'py'): (d / (n + '.out')).write_bytes(decompress((d / (n + '.alc')).read_bytes(), m))\n"
        "print(json.dumps('ok'))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == "ok"
    for name, data in samples.items():
        assert (tmp_path / f"{name}.out").read_bytes() == data


@pytest.mark.integration
@pytest.mark.slow
def test_readme_round_trips_exactly():
    """Issue 22: the project README round-trips exactly with the default settings (opt-in: `-m slow`; minutes on a
    CPU). Its speed is measured by bench/exfil_coder.py, not asserted here."""
    from alignlab.exfil.coder import compress, decompress
    from alignlab.exfil.lm import load_reference_lm

    model = load_reference_lm()
    data = (ROOT / "README.md").read_bytes()
    comp = compress(data, model)
    assert decompress(comp.blob, model) == data
    assert not comp.stats.byte_mode and comp.stats.payload_bits <= comp.stats.ideal_bits + 2
