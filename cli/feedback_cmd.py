"""``riskgate feedback EVENT_ID valid|invalid``: an administrator's word on a sign-in (Provider Admin)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import DbOption, JsonFlag, app, console, counted, handle_errors


@app.command()
@handle_errors
def feedback(
    event_id: Annotated[str, typer.Argument(help="EventId of the sign-in (as `riskgate events` lists it).")],
    value: Annotated[str, typer.Argument(help="valid (it was the user) or invalid (it was not); any case.",
                                         metavar="valid|invalid")],
    db: DbOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Record feedback on an event, as AdminUpdateAuthEventFeedback does; the latest feedback counts, at once."""
    from risk import feedback as fb
    from risk import store

    with store.connect(db) as con:
        fb.set_feedback(con, event_id, fb.feedback_value(value), "Admin")
        info = fb.event_summary(con, event_id)
        latest = fb.latest_feedback(con, [event_id]).to_pylist()[0]
    if as_json:
        print(json.dumps({**info, "creation_date": info["creation_date"].isoformat(),
                          "feedback_value": latest["feedback_value"], "provider": latest["provider"],
                          "feedback_date": latest["feedback_date"].isoformat()}))
        return
    console.print(f"{event_id} ({info['username']}, {info['creation_date']:%Y-%m-%d %H:%M:%S} UTC, "
                  f"{info['client_ip'] or 'no IP'}): {latest['feedback_value']} (Admin)", highlight=False)
    if info["event_response"] != "Pass":  # the known history is successful events only (risk.features)
        label = "a takeover" if latest["feedback_value"] == "Invalid" else "a legitimate"
        console.print(f"A failed sign-in never counts as the user's known history; this makes it {label} label "
                      "for `riskgate train`.", highlight=False)
    elif latest["feedback_value"] == "Invalid":
        console.print("It no longer counts as the user's known history: its IP, network, device and location "
                      "stop lowering the risk of the user's later sign-ins; it is a takeover label for `riskgate train`.",
                      highlight=False)
    else:
        console.print("It counts as the user's known history, and as a legitimate label for `riskgate train`.",
                      highlight=False)
    n = info["later_assessed"]
    if n:
        console.print(f"{counted(n, 'later event')} of the user {'were' if n != 1 else 'was'} assessed "
                      f"before this feedback; `riskgate score --rescore --since "
                      f"{info['creation_date']:%Y-%m-%dT%H:%M:%S}Z` assesses {'them' if n != 1 else 'it'} again.",
                      highlight=False)
