"""Arithmetic coder: bulk renormalisation equals the textbook bit loop; round trips; the +2-bit bound."""

from __future__ import annotations

import math
import random

import numpy as np

from alignlab.exfil.arith import HALF, MASK, QUARTER, Decoder, Encoder


def reference_bits(steps: list[tuple[int, int, int]]) -> str:
    """Witten–Neal–Cleary (1987) bit-by-bit encoder with the same termination (value HALF)."""
    low, high, pending, out = 0, MASK, 0, []

    def emit(bit: int) -> None:
        nonlocal pending
        out.append(str(bit))
        out.extend(str(1 - bit) * pending)
        pending = 0

    for cum, freq, total in steps:
        r = high - low + 1
        high = low + r * (cum + freq) // total - 1
        low = low + r * cum // total
        while True:
            if high < HALF:
                emit(0)
            elif low >= HALF:
                emit(1)
                low, high = low - HALF, high - HALF
            elif low >= QUARTER and high < HALF + QUARTER:
                pending += 1
                low, high = low - QUARTER, high - QUARTER
            else:
                break
            low, high = 2 * low, 2 * high + 1
    if steps:
        emit(1)
    return "".join(out).rstrip("0")


def random_steps(rng: random.Random, n: int) -> list[tuple[list[int], int]]:
    steps = []
    for _ in range(n):
        size = rng.choice([2, 3, 17, 256])
        freqs = [rng.choice([1, 1, 2, 50, 10_000, 1 << 20]) for _ in range(size)]
        sym = rng.randrange(size) if rng.random() < 0.5 else max(range(size), key=freqs.__getitem__)
        steps.append((freqs, sym))
    return steps


def test_bulk_renormalisation_matches_bit_loop_and_round_trips():
    rng = random.Random(0)
    for _trial in range(60):
        steps = random_steps(rng, rng.randrange(0, 400))
        flat = [(sum(f[:s]), f[s], sum(f)) for f, s in steps]
        enc = Encoder()
        for cum, freq, total in flat:
            enc.encode(cum, freq, total)
        payload = enc.finish()
        bits = "".join(f"{b:08b}" for b in payload.data)[: payload.bits]
        assert bits == reference_bits(flat)
        ideal = sum(math.log2(t) - math.log2(f) for _, f, t in flat)
        assert payload.bits <= ideal + 2
        dec = Decoder(payload.data)
        for freqs, sym in steps:
            target = dec.target(sum(freqs))
            cums = np.cumsum([0] + freqs)
            j = int(np.searchsorted(cums, target, side="right")) - 1
            assert j == sym
            dec.consume(int(cums[j]), freqs[j], sum(freqs))


def test_empty_and_certain_symbols_cost_nothing():
    assert Encoder().finish().bits == 0
    enc = Encoder()
    for _ in range(1000):  # probability 1 - 2^-24 each: ~0 bits total
        enc.encode(0, (1 << 24) - 1, 1 << 24)
    assert enc.finish().bits <= 2
