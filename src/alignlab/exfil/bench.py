"""`exfil bench`: LM code vs raw UTF-8, gzip -9 and zstd -19 on one text (spec §6 report)."""

from __future__ import annotations

import gzip
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from alignlab.errors import DataError
from alignlab.exfil.coder import AnyModel, compress, decompress


@dataclass(frozen=True)
class BenchReport:
    model: str
    n_tokens: int
    raw_bytes: int
    lm_bytes: int
    """Whole ALC1 container (header + payload + CRC)."""
    payload_bytes: int
    payload_bits: int
    bits_per_token: float
    bits_per_byte: float
    ideal_bits: float
    overhead_bits: float
    within_bound: bool
    """payload_bits <= ideal_bits + 2 (spec §6)."""
    byte_mode: bool
    gzip_bytes: int
    zstd_bytes: int | None
    """None ("n/a") when the zstandard package is missing."""
    lm_ratio: float
    gzip_ratio: float
    zstd_ratio: float | None
    lm_vs_zstd: float | None
    """zstd_bytes / lm_bytes: how many times smaller the LM code is."""
    raw_bits_per_token: float
    gzip_bits_per_token: float
    zstd_bits_per_token: float | None
    encode_s: float
    decode_s: float | None
    verified: bool
    streams: int = 1
    threads: int = 0
    encode_tokens_per_s: float = 0.0
    decode_tokens_per_s: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def zstd_size(data: bytes, level: int = 19) -> int | None:
    try:
        import zstandard
    except ImportError:
        return None
    return len(zstandard.ZstdCompressor(level=level).compress(data))


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True, every_s: float = 10.0) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on a terminal; otherwise one line on stderr every ``every_s`` seconds (logs stay readable)."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, unit="tok", file=sys.stderr) as bar:
            yield bar.update
        return
    t0 = last = time.perf_counter()
    done = 0

    def update(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.perf_counter()
        if now - last >= every_s or done >= total:
            last = now
            print(f"{desc}: {done}/{total} tokens ({100 * done / total:.0f} %), {done / (now - t0):.1f} tok/s",
                  file=sys.stderr, flush=True)

    yield update


def run_bench(data: bytes, model: AnyModel, verify: bool = True, streams: int | None = None,
              progress: bool = False) -> BenchReport:
    if not data:
        raise DataError("bench: the input file is empty; give a text file with some prose")
    n_est = len(model.tokenize(data) or data) if progress else 0
    t0 = time.perf_counter()
    with progress_bar(n_est, "encode", progress) as bar:
        comp = compress(data, model, streams=streams, progress=bar)
    t1 = time.perf_counter()
    dec_s = None
    if verify:
        with progress_bar(comp.stats.n_tokens, "decode", progress) as bar:
            back = decompress(comp.blob, model, progress=bar)
        if back != data:  # decompress raises on CRC failure; this is belt and braces
            raise DataError("bench: round trip failed")
        dec_s = time.perf_counter() - t1
    s = comp.stats
    gz = len(gzip.compress(data, compresslevel=9, mtime=0))
    zs = zstd_size(data)
    n = max(s.n_tokens, 1)
    return BenchReport(
        model=model.fingerprint.name, n_tokens=s.n_tokens, raw_bytes=s.raw_bytes, lm_bytes=s.container_bytes,
        payload_bytes=s.payload_bytes, payload_bits=s.payload_bits, bits_per_token=s.payload_bits / n,
        bits_per_byte=s.payload_bits / s.raw_bytes, ideal_bits=s.ideal_bits, overhead_bits=s.overhead_bits,
        within_bound=s.payload_bits <= s.ideal_bits + 2, byte_mode=s.byte_mode, gzip_bytes=gz, zstd_bytes=zs,
        lm_ratio=s.container_bytes / s.raw_bytes, gzip_ratio=gz / s.raw_bytes,
        zstd_ratio=None if zs is None else zs / s.raw_bytes,
        lm_vs_zstd=None if zs is None else zs / s.container_bytes,
        raw_bits_per_token=8 * s.raw_bytes / n, gzip_bits_per_token=8 * gz / n,
        zstd_bits_per_token=None if zs is None else 8 * zs / n,
        encode_s=t1 - t0, decode_s=dec_s, verified=verify, streams=s.streams,
        threads=model.fingerprint.threads, encode_tokens_per_s=s.n_tokens / max(t1 - t0, 1e-9),
        decode_tokens_per_s=None if dec_s is None else s.n_tokens / max(dec_s, 1e-9),
    )


def render_bench(r: BenchReport) -> str:
    def na(v: object, fmt: str = "{}") -> str:
        return "n/a" if v is None else fmt.format(v)

    rows = [
        ("raw UTF-8", str(r.raw_bytes), "1.000", f"{r.raw_bits_per_token:.3f}"),
        ("gzip -9", str(r.gzip_bytes), f"{r.gzip_ratio:.3f}", f"{r.gzip_bits_per_token:.3f}"),
        ("zstd -19", na(r.zstd_bytes), na(r.zstd_ratio, "{:.3f}"), na(r.zstd_bits_per_token, "{:.3f}")),
        (f"LM ({r.model})", str(r.lm_bytes), f"{r.lm_ratio:.3f}", f"{8 * r.lm_bytes / max(r.n_tokens, 1):.3f}"),
    ]
    lines = [f"{'coder':<34}{'bytes':>10}{'ratio':>9}{'bits/token':>12}"]
    lines += [f"{a:<34}{b:>10}{c:>9}{d:>12}" for a, b, c, d in rows]
    lines += [
        f"tokens {r.n_tokens}{' (byte mode)' if r.byte_mode else ''}; payload {r.payload_bytes} B = "
        f"{r.payload_bits} bits = {r.bits_per_token:.4f} bits/token, {r.bits_per_byte:.4f} bits/byte",
        f"ideal Σ−log2 q_t = {r.ideal_bits:.1f} bits; overhead {r.overhead_bits:+.2f} bits "
        f"({'within' if r.within_bound else 'OUTSIDE'} the +2 bound)",
        f"zstd -19 bytes / LM container bytes = {na(r.lm_vs_zstd, '{:.2f}')} (> 1: the LM code is smaller); "
        f"encode {r.encode_s:.1f} s ({r.encode_tokens_per_s:.1f} tok/s)"
        + (f", decode {r.decode_s:.1f} s ({r.decode_tokens_per_s:.1f} tok/s, verified)" if r.decode_s is not None
           else "") + f"; {r.streams} stream(s)" + (f", {r.threads} thread(s)" if r.threads else ""),
    ]
    return "\n".join(lines) + "\n"
