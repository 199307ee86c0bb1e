"""`alignlab sae train` flags for schedules and per-preset training settings (stdlib only: keeps --help fast).

Several presets trained from one activation stream each keep their own recipe (issue 14 item 2): every SAE
gets its preset's optimiser and schedule fields, and the explicit flags override them for all SAEs.
"""

from __future__ import annotations

import argparse


def _fraction(text: str) -> float:
    """A float or a ratio such as 1/16."""
    num, _, den = text.partition("/")
    try:
        return float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or ratio: {text!r}") from None


def schedule_options(p: argparse.ArgumentParser) -> None:
    """Schedule knobs of `sae train`; fractions are of --steps, so short runs follow the same recipe."""
    p.add_argument("--l1-warmup-frac", type=float, default=None,
                   help="linear lambda warm-up over this fraction of --steps (default: preset)")
    p.add_argument("--lr-schedule", default=None, choices=("constant", "cosine", "linear_decay_tail"),
                   help="LR after warm-up (default: preset)")
    p.add_argument("--lr-decay-frac", type=float, default=None,
                   help="linear_decay_tail: decay over this final fraction of --steps (default: preset)")
    p.add_argument("--resample-steps", type=int, nargs="*", default=None,
                   help="steps at which dead latents are resampled, L1 presets (default 25k 50k 75k 100k; none: off)")
    p.add_argument("--anneal-start", type=float, default=None,
                   help="lp / gated_anneal: p-annealing starts after this fraction of --steps (default 0.5)")
    p.add_argument("--p-end", type=float, default=None, help="lp / gated_anneal: final p (default 0.2)")
    p.add_argument("--p-updates", type=int, default=None,
                   help="lp / gated_anneal: discrete p changes between --anneal-start and the end (default 10)")
    p.add_argument("--anneal-q", type=int, default=None,
                   help="lp / gated_anneal: recent batches whose penalty sums rescale lambda at a p change (default 10)")
    p.add_argument("--threshold-param", default=None, choices=("linear", "log"),
                   help="jumprelu: train theta itself (linear, the default) or log theta (the paper's pseudo-code; "
                   "then theta moves by a factor of at most ~e^lr per step and needs ~10^4 steps)")
    p.add_argument("--matryoshka-widths", type=_fraction, nargs="+", default=None, metavar="FRAC",
                   help="matryoshka nested widths as fractions of the dictionary width (default 1/16 1/8 1/4 1/2 1)")


def preset_train_fields(preset: str, args: argparse.Namespace) -> dict:
    """One SAE's own optimiser and schedule settings: its preset's, then the explicit flags."""
    from alignlab.sae import preset_train_overrides

    fields = {k: v for k, v in preset_train_overrides(preset).items() if v is not None}
    if "l1_warmup_steps" in fields:  # a 2,000-step warm-up must not swallow a short run
        fields["l1_warmup_steps"] = min(fields["l1_warmup_steps"], args.steps // 5)
    if args.l1_warmup_frac is not None:
        fields.update(l1_warmup_frac=args.l1_warmup_frac, l1_warmup_steps=0)
    if args.lr_decay_frac is not None:
        fields.update(lr_decay_frac=args.lr_decay_frac, lr_decay_steps=0)
    for flag in ("lr", "lr_schedule"):
        if getattr(args, flag) is not None:
            fields[flag] = getattr(args, flag)
    if args.resample_steps is not None:
        fields.update(resample_steps=tuple(args.resample_steps), resample=bool(args.resample_steps))
    return fields


def sae_schedule_fields(args: argparse.Namespace, preset: str, d_sae: int) -> dict:
    """SAEConfig fields set by the p-annealing and Matryoshka flags."""
    fields: dict = {}
    for flag, key in (("anneal_start", "anneal_start_frac"), ("p_end", "p_end"), ("p_updates", "n_sparsity_updates"),
                      ("anneal_q", "anneal_q")):
        if getattr(args, flag) is not None:
            fields[key] = getattr(args, flag)
    if args.threshold_param is not None and preset.startswith("jumprelu"):
        fields["threshold_param"] = args.threshold_param
    if args.matryoshka_widths is not None and preset == "matryoshka":
        fields["matryoshka_widths"] = tuple(sorted({max(1, round(f * d_sae)) for f in args.matryoshka_widths}))
    return fields
