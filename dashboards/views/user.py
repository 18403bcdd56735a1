"""User: one user's history as AdminListUserAuthEvents returns it, with Valid / Invalid feedback buttons."""

from __future__ import annotations

import streamlit as st

from dashboards import common
from dashboards.common import code, md, q
from ingest.errors import RiskgateError, counted
from risk import insights
from risk.auth_events import UserNotFoundError, list_user_auth_events
from risk.feedback import set_feedback

PAGE_SIZES = (20, 60)

st.title("User")


def _reset_paging() -> None:
    st.session_state["user_tokens"] = []


def _feedback(event_id: str, value: str) -> None:
    """Record an administrator's feedback at once (AdminUpdateAuthEventFeedback)."""
    try:
        with common.write_store() as con:
            set_feedback(con, event_id, value, "Admin")
    except RiskgateError as exc:
        st.session_state["user_msg"] = ("error", f"feedback not recorded: {md(exc)}")
    else:
        st.session_state["user_msg"] = ("success", f"{value} recorded for event {code(event_id)}.")


def _pick_user() -> None:
    st.session_state["user_name"] = st.session_state.get("user_pick") or ""
    _reset_paging()


c1, c2 = st.columns([3, 1])
username = c1.text_input("Username", key="user_name", on_change=_reset_paging).strip()
size = c2.selectbox("Events per page", PAGE_SIZES, key="user_page_size", on_change=_reset_paging)

msg = st.session_state.pop("user_msg", None)
if msg:
    (st.success if msg[0] == "success" else st.error)(msg[1])

if not username:
    top = q(insights.top_risky, "user", n=10, **common.scope())
    if len(top):
        st.markdown("Type a username, or pick one of the period's riskiest users:")
        st.selectbox("Riskiest users", ["", *top["username"].tolist()], key="user_pick", on_change=_pick_user)
    st.stop()

pool = common.scope()["pool"]  # a username is one user per pool: with a pool chosen, that pool's user only
tokens: list[str] = st.session_state.setdefault("user_tokens", [])
try:
    listing = q(list_user_auth_events, username, max_results=size, next_token=tokens[-1] if tokens else None,
                user_pool_id=pool)
except UserNotFoundError as exc:
    st.warning(md(exc) + (f" (in pool {code(pool)}; choose all pools in the sidebar to look in every pool)"
                          if pool else ""))
    similar = q(insights.known_users, username[:3], 10)
    if similar:
        st.markdown("Users with a similar name: " + ", ".join(code(u) for u in similar))
    st.stop()

events = listing["AuthEvents"]
st.caption(f"AdminListUserAuthEvents: newest first · page {len(tokens) + 1} · {counted(len(events), 'event')}"
           + (f" · pool {code(pool)} (and events without a pool id)" if pool else ""))
if not events:
    st.info("No events on this page.")

LEVEL_MARK = {"High": ":red[High]", "Medium": ":orange[Medium]", "Low": ":violet[Low]"}
WIDTHS = [1.9, 1.5, 1.5, 2.6, 1.2, 1.1, 1.2]
header = st.columns(WIDTHS)
for col, name in zip(header, ("time (UTC)", "event", "risk", "context", "feedback")):
    col.markdown(f"**{name}**")
for ev in events:
    eid = ev["EventId"]
    risk = ev.get("EventRisk") or {}
    ctx = ev.get("EventContextData") or {}
    fb = ev.get("EventFeedback")
    row = st.columns(WIDTHS, vertical_alignment="center")
    # stored values go into Markdown through code() / md(): shown as written, never interpreted
    row[0].markdown(f"{md(ev['CreationDate'][:19].replace('T', ' '))}  \n{code(eid)}")
    challenges = ", ".join(f"{code(c['ChallengeName'])}:{code(c['ChallengeResponse'])}"
                           for c in ev.get("ChallengeResponses", []))
    row[1].markdown(f"{md(ev['EventType'])} · {md(ev['EventResponse'])}" + (f"  \n{challenges}" if challenges else ""))
    if risk:
        level = risk.get("RiskLevel")
        cc = " · compromised credentials" if risk.get("CompromisedCredentialsDetected") else ""
        row[2].markdown(f"{LEVEL_MARK.get(level, 'no risk')}  \n{md(risk.get('RiskDecision', '-'))}{cc}")
    else:
        row[2].markdown("not assessed")
    place = ", ".join(code(x) for x in (ctx.get("City"), ctx.get("Country")) if x)
    row[3].markdown(f"{code(ctx.get('IpAddress'))} · {place or '-'}  \n{code(ctx.get('DeviceName'))}")
    row[4].markdown(f"**{md(fb['FeedbackValue'])}** ({md(fb['Provider'])})" if fb else "none")
    row[5].button("Valid", key=f"fb_valid_{eid}", on_click=_feedback, args=(eid, "Valid"),
                  help="This was the user (AdminUpdateAuthEventFeedback Valid).")
    row[6].button("Invalid", key=f"fb_invalid_{eid}", on_click=_feedback, args=(eid, "Invalid"),
                  help="This was not the user: the event leaves the user's known history at once.")

nav = st.columns(4)
if tokens and nav[0].button("Newer events", key="user_newer"):
    tokens.pop()
    st.rerun()
if listing.get("NextToken") and nav[1].button("Older events", key="user_older"):
    tokens.append(listing["NextToken"])
    st.rerun()
with st.expander("As JSON (what riskgate events prints)"):
    st.json(listing, expanded=False)
