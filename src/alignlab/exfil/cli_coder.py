"""`alignlab exfil compress | decompress | bench` (spec §6). Heavy imports live inside the handlers."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from alignlab.config import add_dataclass_args, from_args
from alignlab.errors import AlignlabError, DataError

DEFAULT_MODEL = "smollm2-135m-instruct"
CLI_THREADS = 2  # encode and decode both default to it; the container records it (issue 22 §3)


@dataclass(frozen=True)
class CoderConfig:
    """Which probability model codes the text."""

    model: str | None = None
    """Reference model: 'ngram' (built-in order-2 n-gram), an embedded name, HF id, directory or .gguf
    (default: smollm2-135m-instruct; decompress defaults to the model named in the container)."""
    wctx: int | None = None
    """Context window W_ctx in tokens per stream; when full, the KV cache keeps the start token and the newest
    W_ctx/2 − 1 (default 2048; decompress defaults to the container's)."""
    threads: int | None = None
    """Torch intra-op threads for the LM (part of the fingerprint: decode with the count the file was coded
    with; default 2, which halves the time on a 2-core machine and stays bit-identical between encode and decode
    on one machine; decompress defaults to the container's)."""
    dtype: str | None = None
    """LM compute dtype: int4 (default: int4 group-32 linear weights, int8 head, bfloat16 activations; fastest),
    bfloat16, float32 or float16 (part of the fingerprint; decompress defaults to the container's)."""
    streams: int = 0
    """Lockstep streams the token sequence is cut into (LM only; 0: one per 2048 tokens, at most 8). More
    streams are faster and cost bits (each restarts without context)."""

    def __post_init__(self) -> None:
        if self.wctx is not None and self.wctx < 4:
            raise AlignlabError(f"wctx: must be >= 4 tokens, got {self.wctx}")
        if self.threads is not None and self.threads < 1:
            raise AlignlabError(f"threads: must be >= 1, got {self.threads}")
        if self.streams < 0:
            raise AlignlabError(f"streams: must be >= 0 (0 = automatic), got {self.streams}")


def make_model(spec: str, wctx: int | None = None, threads: int | None = None, dtype: str | None = None):
    """'ngram' -> the built-in n-gram; anything else -> an LM through alignlab.models.load_model."""
    if spec == "ngram2" or spec == "ngram":
        from alignlab.exfil.probmodels import NGramModel

        return NGramModel()
    from alignlab.exfil.lm import DEFAULT_DTYPE, DEFAULT_WCTX, load_reference_lm

    return load_reference_lm(spec, wctx or DEFAULT_WCTX, threads or CLI_THREADS, dtype or DEFAULT_DTYPE)


def register_coder(cmds: argparse._SubParsersAction) -> None:
    c = cmds.add_parser("compress", help="arithmetic-code a file under a reference LM (ALC1 container)")
    c.add_argument("input", help="file to compress (any bytes)")
    c.add_argument("-o", "--output", required=True, help="container to write (.alc)")
    c.add_argument("--json", action="store_true", help="print the statistics as JSON")
    add_dataclass_args(c, CoderConfig)
    c.set_defaults(func=_cmd_compress)

    d = cmds.add_parser("decompress", help="decode an ALC1 container back to the original bytes")
    d.add_argument("input", help="container written by `alignlab exfil compress`")
    d.add_argument("-o", "--output", required=True, help="file to write the decoded bytes to")
    add_dataclass_args(d, CoderConfig)
    d.set_defaults(func=_cmd_decompress)

    b = cmds.add_parser("bench", help="bits/token and sizes vs raw UTF-8, gzip -9 and zstd -19")
    b.add_argument("input", help="text file (English prose for the headline number)")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.add_argument("--out", help="also write the JSON report here")
    b.add_argument("--no-verify", action="store_true", help="skip the decode check (halves the time)")
    add_dataclass_args(b, CoderConfig)
    b.set_defaults(func=_cmd_bench)


def _read(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input: {path} is not a file; give an existing file path")
    return p.read_bytes()


def _check_output(path: str, flag: str) -> None:
    """Refuse, before any work, an output that is a directory or lies under a file or unwritable directory."""
    import os

    p = Path(path)
    if p.is_dir():
        raise AlignlabError(f"{flag}: {path} is an existing directory; give a file path")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise AlignlabError(f"{flag}: {parent} is a regular file, so {path} cannot be written under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AlignlabError(f"{flag}: directory {parent} is not writable; choose another {flag}")


def _cmd_compress(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from alignlab.exfil.coder import compress
    from alignlab.io import write_bytes_atomic, write_json_atomic

    _check_output(args.output, "--output")
    cfg = from_args(CoderConfig, args)
    model = make_model(cfg.model or DEFAULT_MODEL, cfg.wctx, cfg.threads, cfg.dtype)
    comp = compress(_read(args.input), model, streams=cfg.streams or None)
    write_bytes_atomic(args.output, comp.blob)
    record = {"input": str(args.input), "model": model.fingerprint.describe(), **dataclasses.asdict(comp.stats)}
    write_json_atomic(str(args.output) + ".json", record)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        s = comp.stats
        print(f"{s.raw_bytes} B -> {s.container_bytes} B ({s.n_tokens} tokens, "
              f"{s.payload_bits / max(s.n_tokens, 1):.3f} bits/token{', byte mode' if s.byte_mode else ''})")
    return 0


def _cmd_decompress(args: argparse.Namespace) -> int:
    from alignlab.exfil.coder import decompress
    from alignlab.exfil.container import unpack
    from alignlab.io import write_bytes_atomic

    _check_output(args.output, "--output")
    cfg = from_args(CoderConfig, args)
    blob = _read(args.input)
    header, _ = unpack(blob)
    fp = header.fingerprint
    if cfg.threads is not None and fp.threads and cfg.threads != fp.threads:
        raise AlignlabError(f"threads: the file was coded with {fp.threads} torch thread(s), not {cfg.threads}; "
                            f"decode with --threads {fp.threads} (the count can change the logits' rounding)")
    model = make_model(cfg.model or fp.name, cfg.wctx or fp.wctx, cfg.threads or fp.threads or 1,
                       cfg.dtype or (fp.dtype if fp.threads else None))
    data = decompress(blob, model)
    write_bytes_atomic(args.output, data)
    print(f"{len(blob)} B -> {len(data)} B (CRC32 ok)", file=sys.stderr)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from alignlab.exfil.bench import render_bench, run_bench
    from alignlab.io import write_json_atomic

    if args.out:
        _check_output(args.out, "--out")
    cfg = from_args(CoderConfig, args)
    model = make_model(cfg.model or DEFAULT_MODEL, cfg.wctx, cfg.threads, cfg.dtype)
    report = run_bench(_read(args.input), model, verify=not args.no_verify, streams=cfg.streams or None,
                       progress=True)
    if args.out:
        write_json_atomic(args.out, {"input": str(args.input), **report.to_dict()})
    print(json.dumps(report.to_dict(), indent=2) if args.json else render_bench(report), end="")
    return 0
