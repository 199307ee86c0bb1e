"""Writing results: provenance, CSV tables and the one self-contained HTML page (spec §7, §8)."""

from __future__ import annotations

import base64
import dataclasses
import html
from pathlib import Path

from alignlab import __version__
from alignlab.io import write_text_atomic

REPORT_NAME = "report.html"


def provenance(cfg=None, backend: str | None = None, restarts: int | None = None, command: str = "") -> dict:
    """Library version, backend and preset (no timestamps, so reruns are byte-identical)."""
    import numpy
    import torch

    rec: dict = {"library": "alignlab", "version": __version__, "command": command, "torch": torch.__version__,
                 "numpy": numpy.__version__}
    if backend is not None:
        rec["backend"] = backend
    if restarts is not None:
        rec["restarts"] = restarts
    if cfg is not None:
        rec["preset"] = cfg.preset
        rec["config"] = dataclasses.asdict(cfg)
    return rec


def _cell(v: object) -> str:
    if isinstance(v, float):
        return repr(v)
    text = str(v)
    return f'"{text}"' if ("," in text or '"' in text) else text


def write_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    lines = [",".join(header)] + [",".join(_cell(v) for v in row) for row in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_report(root: str | Path, title: str = "alignlab superposition") -> Path:
    """(Re)build ``root/report.html`` embedding every PNG under ``root`` (base64) with its folder's summary.txt."""
    root = Path(root)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
             "pre{background:#f4f4f4;padding:.6em;overflow-x:auto;font-size:12px}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for folder in sorted({p.parent for p in root.rglob("*.png")}):
        rel = folder.relative_to(root).as_posix() or "."
        parts.append(f"<h2>{html.escape(rel)}</h2>")
        summary = folder / "summary.txt"
        if summary.exists():
            parts.append(f"<pre>{html.escape(summary.read_text(encoding='utf-8'))}</pre>")
        for png in sorted(folder.glob("*.png")):
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f"<h3>{html.escape(png.name)}</h3><img alt='{html.escape(png.name)}' "
                         f"src='data:image/png;base64,{data}'>")
    parts.append("</body></html>\n")
    target = root / REPORT_NAME
    write_text_atomic(target, "\n".join(parts))
    return target
