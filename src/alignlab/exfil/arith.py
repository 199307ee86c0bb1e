"""Exact integer arithmetic coding (Witten, Neal & Cleary 1987, CACM 30(6)) with Python ints.

State: ``low``/``high`` of PRECISION = 64 bits (high inclusive). After narrowing to a symbol's
[cum, cum + f) out of ``total``, the standard renormalisation runs: E1/E2 (top bits agree: emit
them) then E3 (low = 01…, high = 10…: defer a "pending" bit). Both loops are done in bulk with
bit tricks (same result as the bit-by-bit loop, far fewer Python steps).

Termination: after the last symbol low < HALF <= high, so the value HALF (one bit "1", then the
pending bits, which are zeros) lies in the final interval. The decoder reads zeros past the end of
the payload, so trailing zero bits are dropped. The code length is then at most -log2(A) + 1 bits,
where A >= prod(f_t / total) * (1 - n * total / 2^62) is the final interval width: within the
spec §6 bound  bits <= sum(-log2(f_t / T)) + 2.
"""

from __future__ import annotations

from typing import NamedTuple

PRECISION = 64
MASK = (1 << PRECISION) - 1
HALF = 1 << (PRECISION - 1)
QUARTER = 1 << (PRECISION - 2)
LOWER = HALF - 1
MAX_TOTAL = 1 << 30
"""Largest frequency total the coder accepts (the range never falls below QUARTER = 2^62)."""


class Payload(NamedTuple):
    data: bytes
    bits: int
    """Significant bits in ``data`` (the rest of the last byte is zero padding)."""


class Encoder:
    """Arithmetic encoder; call :meth:`encode` per symbol, then :meth:`finish`."""

    def __init__(self) -> None:
        self.low = 0
        self.high = MASK
        self.pending = 0
        self.count = 0
        self._acc = 0
        self._accn = 0
        self._out = bytearray()

    def _emit(self, bits: int, n: int) -> None:
        self._acc = (self._acc << n) | bits
        self._accn += n
        if self._accn >= 2048:
            rem = self._accn & 7
            self._out += (self._acc >> rem).to_bytes(self._accn >> 3, "big")
            self._acc &= (1 << rem) - 1
            self._accn = rem

    def encode(self, cum: int, freq: int, total: int) -> None:
        """Narrow to [cum, cum + freq) / total and renormalise."""
        low, high = self.low, self.high
        r = high - low + 1
        high = low + (r * (cum + freq)) // total - 1
        low = low + (r * cum) // total
        k = PRECISION - (low ^ high).bit_length()
        if k:  # E1/E2: the top k bits of low and high agree; emit them (first one releases pending)
            bits = low >> (PRECISION - k)
            if self.pending:
                first = bits >> (k - 1)
                p = self.pending
                self._emit((first << p) | (0 if first else (1 << p) - 1), p + 1)
                self._emit(bits & ((1 << (k - 1)) - 1), k - 1)
                self.pending = 0
            else:
                self._emit(bits, k)
            low = (low << k) & MASK
            high = ((high << k) & MASK) | ((1 << k) - 1)
        # E3: low = 0 1^m …, high = 1 0^m …: drop those m middle bits, defer m pending bits
        lo2, hi2 = low & LOWER, high & LOWER
        m = min(PRECISION - 1 - ((~lo2) & LOWER).bit_length(), PRECISION - 1 - hi2.bit_length())
        if m:
            self.pending += m
            low = (lo2 << m) & LOWER
            high = HALF | ((hi2 << m) & LOWER) | ((1 << m) - 1)
        self.low, self.high = low, high
        self.count += 1

    def finish(self) -> Payload:
        """Emit the value HALF of the final interval ("1" + pending zeros, which are dropped)."""
        if self.count:
            self._emit(1, 1)  # then `pending` zeros: implicit (the decoder zero-fills)
        pad = (-self._accn) % 8
        data = bytes(self._out) + (self._acc << pad).to_bytes((self._accn + pad) >> 3, "big")
        data = data.rstrip(b"\x00")
        if not data:
            return Payload(b"", 0)
        last = data[-1]
        nbits = len(data) * 8 - ((last & -last).bit_length() - 1)
        return Payload(data, nbits)


class Decoder:
    """Arithmetic decoder over ``data``; bits past the end read as zero."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.low = 0
        self.high = MASK
        self.value = self._read(PRECISION)

    def _read(self, k: int) -> int:
        if k == 0:
            return 0
        start, end = self.pos >> 3, (self.pos + k + 7) >> 3
        chunk = self.data[start:end]
        x = int.from_bytes(chunk, "big") << (8 * (end - start - len(chunk)))
        x = (x >> (end * 8 - self.pos - k)) & ((1 << k) - 1)
        self.pos += k
        return x

    def target(self, total: int) -> int:
        """The cumulative count the next symbol's interval must contain, in [0, total)."""
        r = self.high - self.low + 1
        return ((self.value - self.low + 1) * total - 1) // r

    def consume(self, cum: int, freq: int, total: int) -> None:
        """Apply the same narrowing and renormalisation as :meth:`Encoder.encode`."""
        low, high, value = self.low, self.high, self.value
        r = high - low + 1
        high = low + (r * (cum + freq)) // total - 1
        low = low + (r * cum) // total
        k = PRECISION - (low ^ high).bit_length()
        if k:
            low = (low << k) & MASK
            high = ((high << k) & MASK) | ((1 << k) - 1)
            value = ((value << k) & MASK) | self._read(k)
        lo2, hi2 = low & LOWER, high & LOWER
        m = min(PRECISION - 1 - ((~lo2) & LOWER).bit_length(), PRECISION - 1 - hi2.bit_length())
        if m:
            low = (lo2 << m) & LOWER
            high = HALF | ((hi2 << m) & LOWER) | ((1 << m) - 1)
            value = (value & HALF) | ((value << m) & LOWER) | self._read(m)
        self.low, self.high, self.value = low, high, value
