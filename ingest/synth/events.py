"""Events as columns of small integers (a :class:`Block`), before they are written in any format.

A block holds, per event: time (epoch ms), user, event type, response,
challenge pattern, device, network and offset (the address), whether it went
through the proxied portal, round-trip time, and the ground truth (attack type,
account takeover, attack IP). Strings are made only when a writer renders a
block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingest.schema import EVENT_RESPONSES, EVENT_TYPES
from ingest.synth.config import ATTACK_TYPES

SIGN_IN, SIGN_UP, FORGOT_PASSWORD, PASSWORD_CHANGE, RESEND_CODE = (EVENT_TYPES.index(x) for x in (
    "SignIn", "SignUp", "ForgotPassword", "PasswordChange", "ResendCode"))
PASS, FAIL = EVENT_RESPONSES.index("Pass"), EVENT_RESPONSES.index("Fail")

#: challenge patterns: what ChallengeResponses holds
CHALLENGES = (
    (),
    (("Password", "Success"),),
    (("Password", "Failure"),),
    (("Password", "Success"), ("Mfa", "Success")),
    (("Password", "Success"), ("Mfa", "Failure")),
)
NO_CHALLENGE, PW_OK, PW_FAIL, PW_MFA_OK, PW_OK_MFA_FAIL = range(len(CHALLENGES))

#: attack codes: 0 = legitimate, i + 1 = ATTACK_TYPES[i]
ATTACK_CODE = {name: i + 1 for i, name in enumerate(ATTACK_TYPES)}

COLUMNS = {
    "t": np.int64,
    "user": np.int32,
    "etype": np.int8,
    "resp": np.int8,
    "chal": np.int8,
    "dev": np.int32,
    "net": np.int32,
    "hi": np.int64,
    "lo": np.int64,
    "proxied": np.bool_,
    "rtt": np.int32,
    "attack": np.int8,
    "ato": np.bool_,
    "atk_ip": np.bool_,
}


@dataclass
class Block:
    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.cols["t"])

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["cols"][name]
        except KeyError:
            raise AttributeError(name) from None

    def take(self, idx: np.ndarray) -> "Block":
        return Block({k: v[idx] for k, v in self.cols.items()})


def empty() -> Block:
    return Block({k: np.empty(0, t) for k, t in COLUMNS.items()})


def make(n: int, **cols) -> Block:
    """A block of ``n`` events; scalars are broadcast, missing columns get their defaults (0 / False)."""
    out = {}
    for k, t in COLUMNS.items():
        v = cols.pop(k, 0)
        a = np.asarray(v)
        out[k] = np.broadcast_to(a, (n,)).astype(t, copy=True) if a.ndim == 0 else a.astype(t, copy=False)
        if len(out[k]) != n:
            raise ValueError(f"column {k} has {len(out[k])} values, expected {n}")
    if cols:
        raise ValueError(f"unknown columns {sorted(cols)}")
    return Block(out)


def concat(blocks: list[Block]) -> Block:
    blocks = [b for b in blocks if len(b)]
    if not blocks:
        return empty()
    if len(blocks) == 1:
        return blocks[0]
    return Block({k: np.concatenate([b.cols[k] for b in blocks]) for k in COLUMNS})


def sort(b: Block) -> Block:
    return b.take(np.argsort(b.t, kind="stable"))
