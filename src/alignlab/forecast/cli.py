"""`alignlab forecast`: the Direct Approach from scaling laws to an arrival-year distribution.

Commands: k, compute, requirements, timeline, compare, sensitivity. Only argparse/stdlib at import time.
"""

from __future__ import annotations

import argparse


def _add_run_args(c: argparse.ArgumentParser, params_help: str) -> None:
    from alignlab.config import add_dataclass_args
    from alignlab.forecast.runconfig import RequirementsConfig

    add_dataclass_args(c, RequirementsConfig)
    for action in c._actions:
        if action.dest == "params":
            action.help = params_help
    c.add_argument("--confidence", type=float, default=None, help="discriminator confidence c (default 0.9)")
    c.add_argument(
        "--inputs",
        default=None,
        help="inline JSON object or JSON file overriding any input: timeline inputs, the slowdown / "
        "k_performance priors, decay_exponent, scale_factor, scale_anchor, update_on_no_tai, "
        "scale_tai_requirements, data_exhausted_year, data_quality_fraction (distributions as "
        "{kind, width, lo, hi}; a number is a fixed value)",
    )
    _add_maths_args(c)
    c.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    c.add_argument("--out", default=None, help="directory for plots and a JSON record")


def _add_maths_args(c: argparse.ArgumentParser) -> None:
    """Maths options; any of them adds a 'custom' mode (corrected maths with these changes)."""
    g = c.add_argument_group("maths (any option adds a 'custom' mode: corrected with these changes)")
    g.add_argument("--k-units", default=None, help="nats (consistent) or bits (log2 over nats, as coded)")
    g.add_argument(
        "--g-formula",
        default=None,
        help="allocation constant G: hoffmann, reference (as coded) or no-exponent",
    )
    g.add_argument("--inversion", default=None, help="closed, interpolate (reference) or interpolate-2023")
    g.add_argument("--criterion", default=None, help="wald (Wald's SPRT) or liu (boundary ln r, Liu 2024)")
    g.add_argument(
        "--liu-r", type=float, default=None, help="likelihood-ratio boundary r for liu (default 10)"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "forecast", help="Direct Approach: compute for indistinguishability and TAI arrival year"
    )
    p.set_defaults(group_parser=p)
    cmds = p.add_subparsers(dest="command", metavar="COMMAND")

    c = cmds.add_parser(
        "k", help="k-performance (tokens to tell model from human text) for a KL, loss or compute"
    )
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--kl", type=float, help="per-token KL in nats")
    src.add_argument("--loss", type=float, help="cross-entropy in nats/token; KL = loss - E")
    src.add_argument("--compute", type=float, help="training FLOP (compute-optimal allocation)")
    c.add_argument(
        "--irreducible",
        type=float,
        default=None,
        help="E for --loss; required for besiroglu2024, whose E is not established",
    )
    c.add_argument("--slowdown", type=float, default=1.0, help="human-judge slowdown s")
    c.add_argument("--confidence", type=float, default=0.9, help="confidence c (default 0.9)")
    c.add_argument("--liu-r", type=float, default=10.0, help="Liu's boundary r (default 10)")
    c.add_argument("--params", default="hoffmann2022", help="scaling law for --loss/--compute (or JSON file)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=_lazy("cmd_k"))

    c = cmds.add_parser("compute", help="log10 training FLOP for a target k, every mode side by side")
    c.add_argument("--k", type=float, required=True, help="target k-performance in tokens")
    c.add_argument("--slowdown", type=float, default=1.0, help="human-judge slowdown s")
    c.add_argument("--params", default="hoffmann2022", help="hoffmann2022, besiroglu2024 or a JSON file")
    c.add_argument("--confidence", type=float, default=0.9, help="confidence c (default 0.9)")
    _add_maths_args(c)
    c.add_argument("--json", action="store_true", help="print JSON")
    c.add_argument("--out", default=None, help="directory for kl_vs_compute.png and k_vs_compute.png")
    c.set_defaults(func=_lazy("cmd_compute"))

    c = cmds.add_parser("requirements", help="Monte-Carlo requirement quantiles (spec §9 table), both modes")
    _add_run_args(c, "hoffmann2022, besiroglu2024 or a JSON file (default: both named sets)")
    c.set_defaults(func=_lazy("cmd_requirements"))

    for name, helptext in (
        ("timeline", "P(TAI by 2030/2050/2100), arrival percentiles and compute-supply plots, every mode"),
        (
            "compare",
            "reference vs corrected medians and their difference; with --inputs, the overrides' effect",
        ),
        ("sensitivity", "arrival median with each input at its interval's low/high end (tornado.png)"),
    ):
        c = cmds.add_parser(name, help=helptext)
        _add_run_args(c, "scaling law (default: the preset's; head = besiroglu2024, readme = hoffmann2022)")
        c.add_argument(
            "--preset",
            default="head",
            help="reference configuration: head (01ffd90, default) or readme-2023-08-23",
        )
        c.add_argument("--no-update", action="store_true", help="skip the update on no TAI yet")
        c.add_argument("--no-scale", action="store_true", help="skip the 5/7 upper-bound adjustment")
        if name == "compare":
            c.add_argument("--no-timeline", action="store_true", help="requirements only")
        c.set_defaults(func=_lazy(f"cmd_{name}", "commands_timeline"))


def _lazy(name: str, module: str = "commands"):
    def handler(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(f"alignlab.forecast.{module}"), name)(args)

    return handler
