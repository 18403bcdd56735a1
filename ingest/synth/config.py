"""What ``riskgate synth`` is asked for (:class:`SynthConfig`) and how the population behaves (:class:`SynthParams`).

Every number that shapes the data set lives in :class:`SynthParams`, in one
place, with its meaning; the generator modules hold no magic numbers of their
own beyond those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from ingest.errors import ConfigurationError

#: The default first day: fixed, so that the same seed gives the same bytes on any day it is run.
DEFAULT_START = date(2026, 6, 1)
MAX_USERS = 5_000_000
MAX_DAYS = 3_650

ATTACK_TYPES = (
    "credential_stuffing",
    "password_spray",
    "brute_force",
    "naive_takeover",
    "vpn_takeover",
    "targeted_takeover",
    "impossible_travel",
)


@dataclass(frozen=True)
class SynthParams:
    """The behaviour of the synthetic population and of the attackers (defaults are the shipped data set)."""

    # activity profiles: share of users, sessions per day (low, high)
    profile_share: tuple[float, float, float] = (0.30, 0.50, 0.20)  # daily, weekly, rare
    profile_rate: tuple[tuple[float, float], ...] = ((0.8, 2.4), (0.14, 0.6), (0.03, 0.1))
    # weekday factors (Mon..Sun) per profile
    weekday_factor: tuple[tuple[float, ...], ...] = (
        (1.12, 1.1, 1.1, 1.1, 1.05, 0.8, 0.7),
        (0.9, 0.9, 0.9, 0.9, 0.95, 1.25, 1.3),
        (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    )
    # sign-ins by local hour of day (relative weights, 00..23)
    hour_weight: tuple[float, ...] = (
        0.6, 0.3, 0.15, 0.1, 0.1, 0.25, 0.9, 2.2, 3.6, 4.0, 3.8, 3.6,
        4.0, 3.8, 3.5, 3.4, 3.4, 3.6, 3.8, 4.2, 4.5, 4.2, 3.0, 1.6,
    )
    night_owl_share: float = 0.06  # users whose day runs about three hours later
    early_bird_share: float = 0.10  # ... or one to two hours earlier
    # devices per user: 1, 2, 3, 4
    devices_share: tuple[float, float, float, float] = (0.38, 0.40, 0.16, 0.06)
    primary_device_share: float = 0.65
    device_lag_share: tuple[float, float, float] = (0.75, 0.18, 0.07)  # browser up to date, 1 or 2 releases behind
    english_share: float = 0.12  # users whose browsers ask for en-US whatever the country
    # networks
    ipv6_share: float = 0.25  # users whose home ISP gives IPv6 (dual stack, preferred when present)
    ipv6_preference: float = 0.7
    mobile_carrier_share: float = 0.6  # phones on the carrier network instead of home Wi-Fi, when away
    mobile_carrier_use: float = 0.45
    office_share: float = 0.35  # users with an office network on weekdays 09-18
    office_use: float = 0.85
    lease_days: tuple[int, ...] = (7, 14, 30, 90, 365)  # how long a residential IPv4 address lasts
    lease_share: tuple[float, ...] = (0.1, 0.2, 0.3, 0.25, 0.15)
    proxy_client_share: float = 0.12  # browser devices using the portal behind a load balancer (X-Forwarded-For)
    sdk_client_share: float = 0.45  # browser devices on the single-page app (client SDK, EncodedData)
    # travel
    trips_per_user_per_90_days: float = 0.35
    trip_days: tuple[int, int] = (4, 11)
    trip_foreign_share: float = 0.45
    long_haul_km: float = 2500.0  # trips farther than this keep an extra day of silence each way
    # accounts
    mfa_share: float = 0.30
    mfa_kind_share: tuple[float, float, float] = (0.55, 0.35, 0.10)  # TOTP, SMS, both
    created_in_window_share: float = 0.08
    unconfirmed_share: float = 0.01
    force_change_share: float = 0.005
    reset_required_share: float = 0.003
    disabled_share: float = 0.005
    history_days: int = 730  # accounts created up to this long before the window
    # sessions
    typo_rate: float = 0.06  # sessions starting with a wrong password ...
    double_typo_share: float = 0.2  # ... twice
    mfa_retry_rate: float = 0.03  # MFA users mistyping the code once
    forgot_rate: float = 0.004  # sessions that go through ForgotPassword
    password_change_rate: float = 0.003
    resend_code_share: float = 0.15  # sign-ups asking for the code again
    max_sessions_per_day: int = 6
    # attacks: share of the expected legitimate events, and how it is split
    attack_share: float = 0.025
    stuffing_share: float = 0.5
    spray_share: float = 0.3
    brute_force_share: float = 0.12
    stuffing_success: float = 0.02
    spray_success: float = 0.006
    brute_force_success: float = 0.3
    users_per_takeover: int = 300  # one incident of each takeover type per this many users
    users_per_brute_force: int = 800


@dataclass(frozen=True)
class SynthConfig:
    """One request: how many users, how long, from which seed, starting when, with or without attacks."""

    users: int = 1000
    days: int = 30
    seed: int = 0
    start: date = DEFAULT_START
    attacks: bool = True
    inline_labels: bool = False  # riskgate-jsonl only: also write each event's labels in its "Labels" object
    params: SynthParams = field(default_factory=SynthParams)

    def __post_init__(self) -> None:
        if not isinstance(self.users, int) or not 1 <= self.users <= MAX_USERS:
            raise ConfigurationError(f"--users must be an integer from 1 to {MAX_USERS:,}; got {self.users!r}")
        if not isinstance(self.days, int) or not 1 <= self.days <= MAX_DAYS:
            raise ConfigurationError(f"--days must be an integer from 1 to {MAX_DAYS}; got {self.days!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigurationError(f"--seed must be a non-negative integer below 2**63; got {self.seed!r}")
        if not isinstance(self.start, date):
            raise ConfigurationError(f"--start must be a date (YYYY-MM-DD); got {self.start!r}")


def parse_start(text: str | None) -> date:
    """``YYYY-MM-DD`` -> date, with a message naming the option."""
    if text is None or text == "":
        return DEFAULT_START
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"--start must be a date written YYYY-MM-DD; got {text!r}") from None


def expected_events_per_user_day(params: SynthParams = SynthParams()) -> float:
    """About how many legitimate events one user makes per day (sessions plus typos and side events)."""
    sessions = sum(s * (lo + hi) / 2 for s, (lo, hi) in zip(params.profile_share, params.profile_rate))
    extra = params.typo_rate * (1 + params.double_typo_share) + params.mfa_share * params.mfa_retry_rate
    extra += params.forgot_rate * 4 + params.password_change_rate
    return sessions * (1 + extra)


def users_for_events(events: int, days: int, params: SynthParams = SynthParams()) -> int:
    """How many users give about ``events`` events over ``days`` days (for benchmarks asking for a size)."""
    per_user = expected_events_per_user_day(params) * days * (1 + params.attack_share)
    return max(1, round(events / per_user))
