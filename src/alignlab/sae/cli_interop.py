"""``alignlab sae export | convert``: JumpReLU export and format conversion (spec §6).

Only argparse/stdlib at module level; torch and the SAE code load inside the handlers.
"""

from __future__ import annotations

import argparse
import json


def register_interop(cmds: argparse._SubParsersAction) -> None:
    """Add the ``export`` and ``convert`` subcommands to the ``alignlab sae`` group."""
    c = cmds.add_parser("export", help="write an SAE as a JumpReLU SAELens file (gated/batchtopk exactly; topk calibrated)")
    c.add_argument("checkpoint", help="SAE folder (SAELens format, or sparsify / dictionary_learning with --from)")
    c.add_argument("--to", default="jumprelu", choices=("jumprelu",), help="target architecture (default jumprelu)")
    c.add_argument("--out", required=True, help="output SAELens folder")
    c.add_argument("--from", dest="fmt", default="auto", choices=("auto", "saelens", "sparsify", "dictionary_learning"),
                   help="input format (default: detected from the files)")
    c.add_argument("--threshold", type=float, default=None,
                   help="TopK only: the JumpReLU threshold to use (default: estimated from --acts)")
    c.add_argument("--acts", default=None, metavar="CACHE",
                   help="activation cache (`alignlab sae cache`) to estimate a TopK threshold on and to report "
                   "L0 / MSE before and after")
    c.add_argument("--tokens", type=int, default=65_536, help="activation rows read from --acts (default 65536)")
    c.add_argument("--batch-size", type=int, default=4096, help="rows per calibration batch (default 4096)")
    c.add_argument("--allow-torch-load", action="store_true",
                   help="read a dictionary_learning ae.pt with torch.load(weights_only=True)")
    c.add_argument("--json", action="store_true", help="print the export report as JSON")
    c.set_defaults(func=_cmd_export)

    c = cmds.add_parser("convert", help="convert SAELens / sparsify / dictionary_learning SAEs into SAELens or sparsify")
    c.add_argument("source", help="SAELens folder, sparsify hookpoint or run folder, dictionary_learning folder or .pt")
    c.add_argument("--out", required=True, help="output folder (one sub-folder per hookpoint for a sparsify run)")
    c.add_argument("--from", dest="fmt", default="auto", choices=("auto", "saelens", "sparsify", "dictionary_learning"),
                   help="input format (default: detected from the files)")
    c.add_argument("--to", default="saelens", choices=("saelens", "sparsify"),
                   help="output format (default saelens; sparsify takes TopK SAEs only)")
    c.add_argument("--allow-torch-load", action="store_true",
                   help="read a dictionary_learning ae.pt (a pickle) with torch.load(weights_only=True)")
    c.set_defaults(func=_cmd_convert)


def _calibration(path: str, tokens: int, batch_size: int) -> list:
    from alignlab.sae.cache import ActivationCache

    rows, got = [], 0
    for chunk in ActivationCache(path).chunks(seed=0, epochs=1):
        rows.append(chunk[: tokens - got].float())
        got += rows[-1].shape[0]
        if got >= tokens:
            break
    import torch

    return list(torch.cat(rows).split(batch_size)) if rows else []


def _cmd_export(args: argparse.Namespace) -> int:
    from alignlab.errors import AlignlabError
    from alignlab.sae.convert import read_saes
    from alignlab.sae.export import compare_on, estimate_topk_threshold, to_jumprelu
    from alignlab.sae.saelens_format import save_sae

    saes = read_saes(args.checkpoint, args.fmt, allow_torch_load=args.allow_torch_load)
    if len(saes) != 1:
        raise AlignlabError(f"{args.checkpoint} holds {len(saes)} SAEs; export one hookpoint folder at a time")
    sae = saes[0][1]
    batches = _calibration(args.acts, args.tokens, args.batch_size) if args.acts else []
    if args.acts and not batches:
        raise AlignlabError(f"{args.acts}: the activation cache is empty")
    threshold = args.threshold
    if sae.cfg.architecture == "topk" and threshold is None and batches:
        threshold = estimate_topk_threshold(sae, batches)
    result = to_jumprelu(sae, threshold)
    report = {"source": str(args.checkpoint), "architecture": sae.cfg.architecture, "exact": result.exact,
              "out": str(args.out)}
    if threshold is not None:
        report["threshold"] = threshold
    if batches:
        report.update(compare_on(sae, result.sae, batches))
    save_sae(result.sae, args.out)
    if args.json:
        print(json.dumps(report))
    else:
        note = "exact" if result.exact else f"approximate, threshold {threshold:.4g}"
        extra = (f"; on {args.acts}: L0 {report['l0_src']:.1f} -> {report['l0_out']:.1f}, "
                 f"MSE change {100 * report['mse_rel_change']:+.2f}%") if batches else ""
        print(f"wrote {args.out}: {sae.cfg.architecture} -> jumprelu ({note}){extra}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from alignlab.sae.convert import convert

    written = convert(args.source, args.out, fmt=args.fmt, to=args.to, allow_torch_load=args.allow_torch_load)
    for path in written:
        print(f"wrote {path} ({args.to})")
    return 0
