"""Tiny deterministic riskgate JSON-lines events for tests (the synthetic population lives in ingest.synth)."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
IPS = ["81.2.69.160", "81.2.69.161", "203.0.113.9", "198.51.100.20", "2001:db8:1::5"]


def event(i: int, **over) -> dict:
    ev = {
        "EventId": f"ev-{i:07d}",
        "UserPoolId": "us-east-1_TEST",
        "ClientId": "app1",
        "Username": f"user{i % 50}",
        "UserSub": f"sub-{i % 50}",
        "EventType": "SignIn",
        "EventResponse": "Pass",
        "CreationDate": (datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
        "ChallengeResponses": [{"ChallengeName": "Password", "ChallengeResponse": "Success"}],
        "ContextData": {
            "IpAddress": IPS[i % len(IPS)],
            "ServerName": "auth.example.com",
            "ServerPath": "/login",
            "HttpHeaders": [
                {"headerName": "User-Agent", "headerValue": UA},
                {"headerName": "Accept-Language", "headerValue": "en-GB,en;q=0.9"},
            ],
        },
    }
    ev.update(over)
    return ev


def write_jsonl(path, events) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for ev in events:
            fh.write((ev if isinstance(ev, str) else json.dumps(ev)) + "\n")


def many(n: int, seed: int = 1) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        ev = event(i)
        ev["EventResponse"] = rnd.choice(["Pass", "Pass", "Fail"])
        out.append(ev)
    return out
