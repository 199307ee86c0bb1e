"""Built-in calculator scenarios (spec §5 golden table) and scenario tables as text, CSV or JSON.

In these scenarios the attacker's channel is given directly (channel or accounts mode).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass

from alignlab.errors import AlignlabError
from alignlab.exfil.calc import CalcConfig, CalcResult, time_to_exfiltrate

_KARVONEN = "Karvonen 2024, LLM perplexity filter post (1 GB/day; 2 TB is his assumption)"
_BROWN = "Brown et al., arXiv:2601.01296 (attacker weight compression 1/16 … 1/100)"
_HAIKU = "Rinberg et al., arXiv:2604.02343 (≈1 TB text/day vs ≈1 TB weights)"
_STEGO = "Rinberg et al., arXiv:2511.02620 (stego capacity < 0.5% under verification)"
_COMMENT = "Greenblatt 2024, comment on the post (sessions/month × 128 B vs 0.64 TB model)"


@dataclass(frozen=True)
class Scenario:
    name: str
    config: CalcConfig
    source: str
    expected: str
    """The figure the source states (for the golden tests and the table)."""


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("karvonen", CalcConfig(mode="channel", weights="2TB", upload="1GB/day"), _KARVONEN,
                 "2000 days"),
        Scenario("karvonen-c16", CalcConfig(mode="channel", weights="2TB", upload="1GB/day",
                                            weight_compression=1 / 16), _KARVONEN + "; " + _BROWN, "125 days"),
        Scenario("karvonen-c100", CalcConfig(mode="channel", weights="2TB", upload="1GB/day",
                                             weight_compression=1 / 100), _KARVONEN + "; " + _BROWN, "20 days"),
        Scenario("haiku-opus-raw", CalcConfig(mode="channel", weights="1TB", upload="1TB/day"), _HAIKU, "1 day"),
        Scenario("verified-stego", CalcConfig(mode="channel", weights="1TB", upload="1TB/day",
                                              stego_fraction=0.005), _STEGO, "200 days"),
        Scenario("comment-10M", CalcConfig(mode="accounts", weights="0.64TiB", accounts=1e7,
                                           per_account="128B/month"), _COMMENT, "549.8 months (binary TB)"),
        Scenario("comment-1B", CalcConfig(mode="accounts", weights="0.64TiB", accounts=1e9,
                                          per_account="128B/month"), _COMMENT, "5.50 months (binary TB)"),
        Scenario("comment-10M-si", CalcConfig(mode="accounts", weights="0.64TB", accounts=1e7,
                                              per_account="128B/month"), _COMMENT, "500 months (decimal TB)"),
        Scenario("comment-1B-si", CalcConfig(mode="accounts", weights="0.64TB", accounts=1e9,
                                             per_account="128B/month"), _COMMENT, "5.00 months (decimal TB)"),
    ]
}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise AlignlabError(f"scenario: unknown {name!r}; choose one of {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def result_row(name: str, cfg: CalcConfig, res: CalcResult, source: str = "user input") -> dict:
    """One table row: every input echoed, the derived rates, T in days/months/years and the source."""
    finite = not res.no_headroom
    row: dict = {"scenario": name, "source": source, "inputs": {k: v for k, v in asdict(cfg).items()
                                                                if v is not None}}
    row.update(asdict(cfg))
    row.update(
        weights_bytes=res.weights_bytes,
        w_eff_bytes=res.w_eff_bytes,
        upload_bytes_per_day=res.upload_bytes_per_day,
        legit_bytes_per_day=res.legit_bytes_per_day,
        channel_bytes_per_day=res.channel_bytes_per_day,
        days=res.days if finite else None,
        months=res.months if finite else None,
        years=res.years if finite else None,
        no_headroom=not finite,
        result=res.text(),
    )
    return row


def scenario_rows(names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        sc = get_scenario(name)
        row = result_row(sc.name, sc.config, time_to_exfiltrate(sc.config), sc.source)
        row["expected"] = sc.expected
        rows.append(row)
    return rows


_TEXT_COLS = ("scenario", "mode", "weights", "weight_compression", "channel_bytes_per_day", "result", "source")


def render_text(rows: list[dict]) -> str:
    """A fixed-width table with the main inputs, T and the source."""
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[c for c in _TEXT_COLS]] + [[fmt(r.get(c)) for c in _TEXT_COLS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_TEXT_COLS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def render_csv(rows: list[dict]) -> str:
    """CSV with every echoed input and output (``inputs`` omitted: its fields are columns already)."""
    cols = [c for c in rows[0] if c != "inputs"] if rows else []
    for r in rows[1:]:
        cols += [c for c in r if c not in cols and c != "inputs"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items() if k != "inputs"})
    return buf.getvalue()


def render_json(rows: list[dict]) -> str:
    """One object for one row, else a list. Infinity is written as ``days: null, no_headroom: true``."""
    for r in rows:
        for v in r.values():
            if isinstance(v, float) and not math.isfinite(v):
                raise AssertionError("non-finite value would not be valid JSON")
    return json.dumps(rows[0] if len(rows) == 1 else rows, indent=2, ensure_ascii=False) + "\n"
