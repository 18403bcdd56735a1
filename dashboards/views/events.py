"""Events: find events by user, IP or CIDR, place, network, level, decision and type; see why one was rated."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import common
from dashboards.common import code, md, q
from ingest.errors import counted
from ingest.schema import EVENT_TYPES
from risk import insights

PAGE_ROWS = 100
ANY = "any"
COLUMNS = ("time", "username", "event_type", "response", "level", "score", "decision", "outcome", "ip", "country",
           "city", "asn", "as_org", "device_name", "event_id")

s = common.scope()
st.title("Events")
st.caption(common.describe_scope(s))


def _ip_problem() -> str | None:
    text = (st.session_state.get("ev_ip") or "").strip()
    if not text:
        return None
    try:
        insights.parse_ip_filter(text)
    except insights.InsightsError as exc:
        return str(exc)
    return None


def _asn_problem() -> str | None:
    text = (st.session_state.get("ev_asn") or "").strip().upper().removeprefix("AS")
    # ASCII digits only (str.isdigit takes "²", which int() refuses), and 32 bits, as AS numbers are
    if text and not (text.isascii() and text.isdigit() and int(text) < 2 ** 32):
        return f"{st.session_state['ev_asn']!r} is not an AS number (write 16509 or AS16509)"
    return None


with st.form("ev_filters"):
    r1 = st.columns(4)
    r1[0].text_input("User", key="ev_user", help="Exact username, or a prefix ending in *.")
    r1[1].text_input("IP or CIDR", key="ev_ip", placeholder="203.0.113.0/24 or 2001:db8::/32")
    if (problem := _ip_problem()) is not None:
        r1[1].error(md(problem))
    r1[2].text_input("Country", key="ev_country", help="ISO code (DE) or name (Germany).")
    r1[3].text_input("ASN", key="ev_asn", placeholder="16509")
    if (problem_asn := _asn_problem()) is not None:
        r1[3].error(md(problem_asn))
    r2 = st.columns(4)
    r2[0].selectbox("Level", [ANY, *insights.LEVEL_ORDER, insights.NO_RISK, insights.NOT_EVALUATED,
                                   insights.NOT_ASSESSED], key="ev_level")
    r2[1].selectbox("RiskDecision", [ANY, *insights.DECISIONS], key="ev_decision")
    r2[2].selectbox("Outcome", [ANY, *insights.OUTCOMES], key="ev_outcome")
    r2[3].selectbox("Event type", [ANY, *EVENT_TYPES], key="ev_type")
    st.form_submit_button("Search", type="primary")

if problem is not None or problem_asn is not None:
    st.stop()


def _opt(key: str) -> str | None:
    v = st.session_state.get(key)
    return None if v in (None, "", ANY) else v


asn_text = (st.session_state.get("ev_asn") or "").strip().upper().removeprefix("AS")
filters = insights.EventFilters(
    username=_opt("ev_user"), ip=_opt("ev_ip"), country=_opt("ev_country"),
    asn=int(asn_text) if asn_text else None, level=_opt("ev_level"), decision=_opt("ev_decision"),
    outcome=_opt("ev_outcome"), event_type=_opt("ev_type"), **s,
).cleaned()

page_no = int(st.session_state.get("ev_page", 1))
rows, total = q(insights.search_events, filters, limit=PAGE_ROWS, offset=(page_no - 1) * PAGE_ROWS)
pages = max(1, -(-total // PAGE_ROWS))
if page_no > pages:  # the filters changed under a later page
    page_no = st.session_state["ev_page"] = 1
    rows, total = q(insights.search_events, filters, limit=PAGE_ROWS, offset=0)
head = st.columns([3, 1])
head[0].markdown(f"**{counted(total, 'event')}** {'matches' if total == 1 else 'match'} · newest first · "
                 f"page {page_no} of {pages}")
head[1].number_input("Page", min_value=1, max_value=pages, step=1, key="ev_page", label_visibility="collapsed")

if not len(rows):
    st.info("No event matches these filters.")
    st.stop()


def _pick_from_table() -> None:
    sel = st.session_state.get("ev_table")
    picked = sel.selection.rows if sel is not None else []
    if picked:
        st.session_state["ev_pick"] = st.session_state["_ev_ids"][picked[0]]


st.session_state["_ev_ids"] = rows["event_id"].tolist()
st.dataframe(
    rows, hide_index=True, key="ev_table", on_select=_pick_from_table, selection_mode="single-row", column_order=COLUMNS,
    column_config={"score": st.column_config.NumberColumn(format="%.3f"),
                   "time": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")},
)

ids = rows["event_id"].tolist()
if st.session_state.get("ev_pick") not in ids:
    st.session_state["ev_pick"] = ids[0]
def _text(value, missing: str) -> str:
    return missing if value is None or pd.isna(value) or value == "" else str(value)


labels = {r.event_id: f"{r.time:%Y-%m-%d %H:%M:%S} · {_text(r.username, '-')} · {_text(r.ip, '-')} · "
                      f"{_text(r.level, 'not assessed')}"
          for r in rows.itertuples()}
event_id = st.selectbox("Event (or click a row above)", ids, key="ev_pick", format_func=lambda i: labels.get(i, i))

d = q(insights.event_detail, event_id)
if d is None:
    st.warning(f"Event {code(event_id)} is no longer in the store.")
    st.stop()

# every stored value below goes into Markdown through code() or md(): shown as written, never interpreted
st.header(f"{md(d['event_type'])} by {code(d['username'])} at {d['creation_date']:%Y-%m-%d %H:%M:%S} UTC")
if st.button(f"Open {code(d['username'])}'s history", key="ev_open_user"):
    st.session_state["user_name"] = d["username"]
    st.switch_page("views/user.py")

c = st.columns(5)
if d["assessed"]:
    c[0].metric("Risk level", d["risk_level"] or (insights.NOT_EVALUATED if d["mode"] == "OFF" else insights.NO_RISK))
    c[1].metric("Score", f"{d['score']:.3f}")
    c[2].metric("RiskDecision", d["risk_decision"] or "-")
    c[3].metric("Outcome", d["outcome"] or "-", help="In AUDIT: what would have happened.")
    c[4].metric("Mode", d["mode"] or "-")
else:
    st.info("This event has not been scored yet (riskgate score).")

why, context = st.columns(2)
with why:
    st.subheader("Why")
    if d["reasons"]:
        st.markdown("\n".join(f"- **{md(r['code'])}** — {md(r['words'])}" for r in d["reasons"]))
    elif d["assessed"]:
        st.markdown("Below the Low threshold: no risk signal to explain.")
    if d["decision_reasons"]:
        st.markdown("**Decision**")
        st.markdown("\n".join(f"- {md(r)}" for r in d["decision_reasons"]))
    if d["assessed"]:
        st.caption(f"model v{d['model_version']} · thresholds v{d['thresholds_version']} · "
                   f"configuration v{d['config_version']} · mode v{d['mode_version']} · action "
                   f"{md(d['event_action'] or '-')} · IP exception {md(d['ip_exception'] or '-')}")
    fb = d["feedback"]
    st.markdown(f"**Feedback:** {md(fb['value'])} ({md(fb['provider'])}, {fb['date']:%Y-%m-%d %H:%M})" if fb
                else "**Feedback:** none")
    if d["labels"]:
        st.markdown("**Labels:** " + ", ".join(f"{code(k)}={code(v)} ({md(src)})" for k, v, src in d["labels"]))
with context:
    st.subheader("Context data")
    place = ", ".join(code(x) for x in (d["city"], d["region"], d["country_name"]) if x) or "unknown"
    facts = {
        "IP address": f"{code(d['client_ip'])} (from {md(d['client_ip_source'] or '-')}; IpAddress "
                      f"{code(d['ip_address'])})",
        "Network": (f"{code(d['ip_prefix'])} · AS{d['asn']} {code(d['as_org'], '')}" if d["asn"]
                    else code(d["ip_prefix"])),
        "Place": f"{place} ({md(d['geo_source'] or '-')}; time zone {code(d['time_zone'])})",
        "Device": f"{code(d['device_name'])} · {code(d['device_type'])}",
        "Fingerprint": f"{code(d['device_fingerprint'])} ({md(d['device_fingerprint_source'] or '-')})",
        "Context data sent": "yes" if d["has_context_data"] else "no",
        "Server": code(f"{d['server_name'] or ''}{d['server_path'] or ''}"),
        "Response": md(d["event_response"]),
        "Challenges": ", ".join(f"{code(a)}:{code(b)}" for a, b in d["challenge_responses"]) or "-",
        "Pool / client": f"{code(d['user_pool_id'])} / {code(d['client_id'])}",
        "Source": f"{md(d['source_format'])} {code(d['source_file'])}:{d['source_line']}",
    }
    st.markdown("\n".join(f"- **{k}:** {v}" for k, v in facts.items()))
    if d["http_headers"]:
        with st.expander(f"HTTP headers ({len(d['http_headers'])})"):
            st.dataframe({"header": [h for h, _ in d["http_headers"]], "value": [v for _, v in d["http_headers"]]},
                         hide_index=True, key="ev_headers")

st.subheader("Previous sign-ins of this user")
prev = q(insights.previous_signins, event_id, 10)
if len(prev):
    st.dataframe(prev, hide_index=True, key="ev_previous", column_order=[c for c in COLUMNS if c != "username"],
                 column_config={"score": st.column_config.NumberColumn(format="%.3f")})
else:
    st.info("None: this is the user's first event in the store.")
