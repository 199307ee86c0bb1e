"""`alignlab exfil …`: calculator, LM arithmetic coder and egress proxy (spec upload-limits.md).

Only argparse/stdlib at module level; everything heavy is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys

from alignlab.config import add_dataclass_args, from_args


def register(sub: argparse._SubParsersAction) -> None:
    from alignlab.exfil.calc import CalcConfig

    p = sub.add_parser("exfil", help="upload limits against weight exfiltration: calculator, LM coder, proxy")
    p.set_defaults(group_parser=p)
    cmds = p.add_subparsers(dest="command", metavar="COMMAND")

    c = cmds.add_parser("calc", help="time to exfiltrate the weights through an upload limit (spec §5)")
    c.add_argument("--scenario", nargs="+", metavar="NAME",
                   help="built-in scenario(s), or 'all' (karvonen, karvonen-c16, karvonen-c100, haiku-opus-raw, "
                   "verified-stego, comment-10M, comment-1B, comment-10M-si, comment-1B-si)")
    fmt = c.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON (one object per row)")
    fmt.add_argument("--csv", action="store_true", help="print CSV")
    c.add_argument("--out", help="also write the table to this file (.json/.csv/.txt by extension)")
    c.add_argument("--plot-dir", help="write calc_headroom.png and calc_heatmap.png into this directory")
    add_dataclass_args(c, CalcConfig)
    c.set_defaults(func=_cmd_calc)

    from alignlab.exfil.cli_coder import register_coder
    from alignlab.exfil.cli_proxy import register_proxy

    register_coder(cmds)
    register_proxy(cmds)


def _cmd_calc(args: argparse.Namespace) -> int:
    from pathlib import Path

    from alignlab.exfil.calc import CalcConfig, time_to_exfiltrate
    from alignlab.exfil.scenarios import (
        SCENARIOS,
        render_csv,
        render_json,
        render_text,
        result_row,
        scenario_rows,
    )
    from alignlab.io import write_text_atomic

    if args.scenario:
        names = list(SCENARIOS) if args.scenario == ["all"] else args.scenario
        rows = scenario_rows(names)
    else:
        if args.weights is None and args.params is None and args.plot_dir:
            rows = []
        else:
            cfg = from_args(CalcConfig, args)
            rows = [result_row("custom", cfg, time_to_exfiltrate(cfg))]
    if rows:
        text = render_json(rows) if args.json else render_csv(rows) if args.csv else render_text(rows)
        sys.stdout.write(text)
        if args.out:
            suffix = Path(args.out).suffix.lower()
            render = {".json": render_json, ".csv": render_csv}.get(suffix, render_text)
            write_text_atomic(args.out, render(rows))
    if args.plot_dir:
        from alignlab.exfil.plots import write_plots

        a, b = write_plots(args.plot_dir)
        print(f"wrote {a} and {b} (+ calc_plots.json)", file=sys.stderr)
    return 0
