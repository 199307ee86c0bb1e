"""Time-to-exfiltrate calculator, spec §5: T = W_eff / attacker channel.

W_eff = params × bytes_per_param × r_w (or a weight size given directly, × r_w).
L_legit = output_tokens/day × bytes_per_token × ρ_d.
Modes (what the attacker's channel is, in bytes/day):
  headroom (default)  U = (1 + h)·L_legit, channel = U − L_legit = h·L_legit; with an explicit
                      ``upload`` the channel is U − L_legit, and U ≤ L_legit gives "∞ (no headroom)";
  channel             channel = f_s·U  (f_s = 1 raw, 0.005 verified output, arXiv:2511.02620);
  accounts            channel = accounts × per-account channel × f_s  (Brown et al., arXiv:2601.01296).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from alignlab.errors import AlignlabError
from alignlab.exfil.units import (
    DAYS_PER_MONTH,
    DAYS_PER_YEAR,
    check_fraction,
    check_positive,
    parse_rate,
    parse_size,
)

NO_HEADROOM = "∞ (no headroom)"


@dataclass(frozen=True)
class CalcConfig:
    """Inputs of one time-to-exfiltrate computation (sizes accept SI and IEC suffixes)."""

    mode: Literal["headroom", "channel", "accounts"] = "headroom"
    """headroom: channel = U − L_legit; channel: channel = f_s·U; accounts: accounts × per-account × f_s."""
    weights: str | None = None
    """Raw weight size, e.g. 2TB or 0.64TiB (alternative to --params × --bytes-per-param)."""
    params: float | None = None
    """Parameter count (used when --weights is not given)."""
    bytes_per_param: float = 2.0
    """Bytes per parameter; bf16 = 2."""
    weight_compression: float = 1.0
    """r_w in (0, 1]: attacker's compression of the weights (1/16 … 1/100 per Brown et al. 2601.01296)."""
    upload: str | None = None
    """Allowed upload U per day, e.g. 1TB/day or 10MB/s (bare number = bytes/day)."""
    tokens_per_day: float | None = None
    """Legitimate output tokens per day (headroom mode)."""
    bytes_per_token: float = 4.0
    """Bytes per output token on the wire (an assumption; the sources do not establish it)."""
    defender_compression: float = 1.0
    """ρ_d in (0, 1]: defender's compression of legitimate output (1 = raw; measured by `exfil bench`)."""
    headroom: float = 0.1
    """h > 0: in headroom mode without --upload, U = (1 + h)·L_legit."""
    stego_fraction: float = 1.0
    """f_s in (0, 1]: share of the channel usable by the attacker (0.005 under verification, 2511.02620)."""
    accounts: float = 1.0
    """Number of compromised user accounts (accounts mode)."""
    per_account: str | None = None
    """Channel per account, e.g. 128B/month (accounts mode)."""

    def __post_init__(self) -> None:
        if self.mode not in ("headroom", "channel", "accounts"):
            raise AlignlabError(f"mode: must be headroom, channel or accounts, got {self.mode!r}")
        if self.weights is None and self.params is None:
            raise AlignlabError("weights: give --weights (e.g. 2TB) or --params")
        if self.weights is not None:
            parse_size(self.weights, "weights")
        else:
            check_positive(self.params, "params")  # type: ignore[arg-type]
        check_positive(self.bytes_per_param, "bytes_per_param")
        check_fraction(self.weight_compression, "weight_compression")
        check_fraction(self.defender_compression, "defender_compression")
        check_fraction(self.stego_fraction, "stego_fraction")
        check_positive(self.bytes_per_token, "bytes_per_token")
        check_positive(self.headroom, "headroom")
        check_positive(self.accounts, "accounts")
        if self.upload is not None:
            parse_rate(self.upload, "upload")
        if self.tokens_per_day is not None:
            check_positive(self.tokens_per_day, "tokens_per_day")
        if self.mode == "headroom" and self.tokens_per_day is None:
            raise AlignlabError("tokens_per_day: headroom mode needs --tokens-per-day (or use --mode channel)")
        if self.mode == "channel" and self.upload is None:
            raise AlignlabError("upload: channel mode needs --upload, e.g. 1GB/day")
        if self.mode == "accounts":
            if self.per_account is None:
                raise AlignlabError("per_account: accounts mode needs --per-account, e.g. 128B/month")
            parse_rate(self.per_account, "per_account")


@dataclass(frozen=True)
class CalcResult:
    """Result of one computation; all rates in bytes/day. ``days`` is inf when there is no headroom."""

    weights_bytes: float
    w_eff_bytes: float
    upload_bytes_per_day: float | None
    legit_bytes_per_day: float | None
    channel_bytes_per_day: float
    days: float

    @property
    def months(self) -> float:
        return self.days / DAYS_PER_MONTH

    @property
    def years(self) -> float:
        return self.days / DAYS_PER_YEAR

    @property
    def no_headroom(self) -> bool:
        return math.isinf(self.days)

    def text(self) -> str:
        """``2000 days (65.7 months, 5.476 years)`` or ``∞ (no headroom)``."""
        if self.no_headroom:
            return NO_HEADROOM
        return f"{self.days:.4g} days ({self.months:.4g} months, {self.years:.4g} years)"


def time_to_exfiltrate(cfg: CalcConfig) -> CalcResult:
    """Evaluate T = W_eff / channel for ``cfg`` (spec §5)."""
    weights = parse_size(cfg.weights, "weights") if cfg.weights is not None else (
        float(cfg.params) * cfg.bytes_per_param)  # type: ignore[arg-type]
    w_eff = weights * cfg.weight_compression
    legit = None
    if cfg.tokens_per_day is not None:
        legit = cfg.tokens_per_day * cfg.bytes_per_token * cfg.defender_compression
    upload = parse_rate(cfg.upload, "upload") if cfg.upload is not None else None
    if cfg.mode == "headroom":
        assert legit is not None
        if upload is None:
            upload = (1.0 + cfg.headroom) * legit
            channel = cfg.headroom * legit
        else:
            channel = upload - legit
    elif cfg.mode == "channel":
        assert upload is not None
        channel = cfg.stego_fraction * upload
    else:
        channel = cfg.accounts * parse_rate(cfg.per_account, "per_account") * cfg.stego_fraction  # type: ignore[arg-type]
    days = w_eff / channel if channel > 0 else math.inf
    return CalcResult(weights, w_eff, upload, legit, channel, days)


def headroom_days(weights_bytes: float, channel_bytes_per_day: float, weight_compression: float = 1.0) -> float:
    """Vectorisable core: days = weights × r_w / channel (used by the plots)."""
    return weights_bytes * weight_compression / channel_bytes_per_day
