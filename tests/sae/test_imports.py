"""Issue 14 item 3: every alignlab.sae module imports on its own, first, in a fresh interpreter state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SAE_DIR = Path(__file__).parents[2] / "src" / "alignlab" / "sae"

# One interpreter (torch imported once), but alignlab itself is dropped from sys.modules before each module,
# so each is the first alignlab.sae module initialised, which is what exposes an import cycle.
SCRIPT = """
import importlib, sys, traceback
import torch  # noqa: F401
failed = []
for name in sys.argv[1:]:
    for key in [k for k in sys.modules if k == "alignlab" or k.startswith("alignlab.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_each_sae_module_imports_alone():
    modules = sorted(f"alignlab.sae.{p.stem}" for p in SAE_DIR.glob("*.py") if p.stem != "__init__")
    assert {"alignlab.sae.topk", "alignlab.sae.batchtopk", "alignlab.sae.lp", "alignlab.sae.standard"} <= set(modules)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *modules], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
