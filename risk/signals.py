"""The risk signals: small registered objects that features compute and reasons name.

Each :class:`Signal` is one column of ``risk.features.compute_features``'s
output (a float64, NULL when it cannot be computed) with a snake_case code in
the style of Auth0's risk signals (``new_device``, ``impossible_travel`` ...),
a one-line description, the direction of risk and a unit. The SQL that
computes each column lives in ``risk.features`` (the module that reads the
events table); this module holds no SQL and does nothing at import time
beyond filling the registry.

``FEATURE_COLUMNS`` is the model's input, in registration order; it is part of
the contract with ``risk.model`` -- append new signals at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.errors import RiskgateError


@dataclass(frozen=True)
class Signal:
    """One risk signal: a code reasons can name, and the feature column that carries its value."""

    code: str
    description: str
    column: str
    higher_is_riskier: bool = True
    unit: str = ""


class UnknownSignalError(RiskgateError):
    """A signal code that is not registered."""


#: code -> Signal, in registration order.
SIGNALS: dict[str, Signal] = {}
#: The feature columns (model input), in a fixed order.
FEATURE_COLUMNS: list[str] = []


def register(signal: Signal) -> Signal:
    """Add ``signal`` to the registry; codes and columns are unique."""
    if not signal.code or not signal.code.replace("_", "").isalnum() or signal.code != signal.code.lower():
        raise RiskgateError(f"signal code must be snake_case, got {signal.code!r}")
    if signal.code in SIGNALS:
        raise RiskgateError(f"signal code {signal.code!r} is already registered")
    if signal.column in FEATURE_COLUMNS:
        raise RiskgateError(f"feature column {signal.column!r} (signal {signal.code!r}) is already registered")
    SIGNALS[signal.code] = signal
    FEATURE_COLUMNS.append(signal.column)
    return signal


def get(code: str) -> Signal:
    """The signal registered as ``code`` (an error naming the known codes otherwise)."""
    try:
        return SIGNALS[code]
    except KeyError:
        raise UnknownSignalError(f"unknown signal {code!r}; known: {', '.join(SIGNALS)}") from None


def by_column(column: str) -> Signal:
    """The signal whose feature column is ``column``."""
    for s in SIGNALS.values():
        if s.column == column:
            return s
    raise UnknownSignalError(f"no signal has the feature column {column!r}")


def _reg(code: str, description: str, column: str | None = None, *, higher: bool = True, unit: str = "") -> None:
    register(Signal(code=code, description=description, column=column or code, higher_is_riskier=higher, unit=unit))


# -- the user's known history (successful events not marked Invalid) ---------------------

_reg("history_size", "Successful sign-ins of the user before this one (learning period: few means little is known)",
     higher=False, unit="events")
_reg("new_ip", "First time the user signs in from this IP address (1) or seen before (0)")
_reg("new_ip_prefix", "First time the user signs in from this network: the /24 (IPv4) or /48 (IPv6) of the IP")
_reg("new_asn", "First time the user signs in from this autonomous system (ASN)")
_reg("new_country", "First time the user signs in from this country")
_reg("new_city", "First time the user signs in from this city (country, region and city)")
_reg("new_device", "First time the user signs in with this device fingerprint")
_reg("impossible_travel", "Speed needed to come from the previous successful sign-in's location (haversine)",
     "travel_speed_kmh", unit="km/h")
_reg("travel_distance", "Distance from the previous successful sign-in's location (haversine)",
     "travel_distance_km", unit="km")
_reg("time_since_last_success", "Time since the user's previous successful sign-in",
     "hours_since_last_success", higher=False, unit="h")
_reg("unusual_hour", "How unusual the hour of the week (UTC) is for the user: log of uniform over the "
     "user's smoothed frequency of that hour, 0 with no history", unit="nats")

# -- failures and cross-user activity, in sliding windows ---------------------------------

_reg("user_failures_1h", "Failed events of the user in the hour before", unit="events")
_reg("user_failures_24h", "Failed events of the user in the 24 hours before", unit="events")
_reg("ip_failures_1h", "Failed events from this IP address (any user) in the hour before", unit="events")
_reg("ip_failures_24h", "Failed events from this IP address (any user) in the 24 hours before", unit="events")
_reg("prefix_failures_24h", "Failed events from this /24 or /48 network (any user) in the 24 hours before",
     unit="events")
_reg("ip_users_1h", "Distinct users tried from this IP address in the hour before (stuffing, spraying)",
     unit="users")
_reg("ip_users_24h", "Distinct users tried from this IP address in the 24 hours before", unit="users")
_reg("prefix_users_24h", "Distinct users tried from this /24 or /48 network in the 24 hours before", unit="users")

# -- the network and the request ------------------------------------------------------------

_reg("hosting_network", "The IP belongs to a hosting, cloud or VPN network (risk/data/hosting_asns.csv)")
_reg("no_context_data", "The application sent no context data (no IP, device or user agent) with the event")

# -- Freeman et al. (NDSS 2016): per-level smoothed log likelihood ratios --------------------

_FREEMAN = "Freeman et al. log likelihood ratio log p(x)/p(x|user) of the {} level, given the levels above"
_reg("freeman_country", _FREEMAN.format("country"), unit="nats")
_reg("freeman_asn", _FREEMAN.format("ASN"), unit="nats")
_reg("freeman_ip", _FREEMAN.format("IP address"), unit="nats")
_reg("freeman_device_type", _FREEMAN.format("device type"), unit="nats")
_reg("freeman_os", _FREEMAN.format("operating system"), unit="nats")
_reg("freeman_browser", _FREEMAN.format("browser"), unit="nats")
_reg("freeman_ua", _FREEMAN.format("full user agent"), unit="nats")

#: The Freeman columns, by hierarchy, top level first.
FREEMAN_IP_LEVELS = ("freeman_country", "freeman_asn", "freeman_ip")
FREEMAN_UA_LEVELS = ("freeman_device_type", "freeman_os", "freeman_browser", "freeman_ua")
FREEMAN_COLUMNS = FREEMAN_IP_LEVELS + FREEMAN_UA_LEVELS
