"""Overview: what happened to the sign-ins of the period, where, and who is behind the risk."""

from __future__ import annotations

import html

import plotly.express as px
import streamlit as st

from dashboards import common
from dashboards.common import n, q
from risk import insights

LEVEL_COLOURS = {"High": "#d62728", "Medium": "#ff7f0e", "Low": "#e6c229", insights.NO_RISK: "#2ca02c",
                 insights.NO_LEVEL: "#7f7f7f", insights.NOT_EVALUATED: "#bdbdbd",
                 insights.NOT_ASSESSED: "#9e9e9e"}


def _plotly_text(value):
    """A stored value for a plotly text or hover label: ``&``, ``<`` and ``>`` escaped, so plotly shows it as written
    (no tag such as ``<a href>`` can form; plotly decodes these entities, not ``&quot;``)."""
    return html.escape(value, quote=False) if isinstance(value, str) else value


s = common.scope()
st.title("Overview")
st.caption(common.describe_scope(s))

m = q(insights.overview_metrics, **s)
cols = st.columns(7)
cols[0].metric("Sign-ins", n(m["sign_ins"]), help="SignIn events of the period (any response).")
cols[1].metric("Risky events", n(m["risky"]), help="Events given a risk level (Low, Medium or High).")
cols[2].metric("High risk", n(m["by_level"]["High"]))
cols[3].metric("MFA challenges", n(m["by_outcome"]["MfaChallenge"]),
               help="Outcome MfaChallenge (in AUDIT: would have been challenged).")
cols[4].metric("Blocked", n(m["by_outcome"]["Block"]), help="Outcome Block (in AUDIT: would have been blocked).")
cols[5].metric("OverrideBlock", n(m["override_block"]), help="Blocked by a BlockedIPRangeList entry.")
cols[6].metric("Compromised credentials", n(m["compromised_credentials"]))

left, right = st.columns(2)
with left:
    st.subheader("Risk by level")
    st.dataframe(
        {"level": list(m["by_level"]), "events": list(m["by_level"].values())},
        hide_index=True, key="ov_levels",
    )
with right:
    st.subheader("Decisions")
    st.dataframe(
        {"RiskDecision": list(m["by_decision"]), "events": list(m["by_decision"].values()),
         "outcome": list(m["by_outcome"]), "outcome events": list(m["by_outcome"].values())},
        hide_index=True, key="ov_decisions",
    )

st.subheader("Metrics over time")
c1, c2, c3 = st.columns([2, 2, 1])
metric = c1.selectbox("Metric (as Cognito names it)", insights.METRICS, index=insights.METRICS.index("Risk"),
                      key="ov_metric")
by = c2.radio("Broken down by", ["risk level", "event type"], horizontal=True, key="ov_by")
days = (s["until"] - s["since"]).days if s["since"] and s["until"] else 30
default_bucket = "hour" if days <= 3 else "week" if days > 180 else "day"
bucket = c3.selectbox("Per", insights.BUCKETS, index=insights.BUCKETS.index(default_bucket), key="ov_bucket")
series = q(insights.metric_series, metric, by="risk_level" if by == "risk level" else "event_type", bucket=bucket, **s)
if len(series):
    fig = px.bar(series, x="time", y="count", color="group",
                 color_discrete_map=LEVEL_COLOURS if by == "risk level" else None,
                 category_orders={"group": list(LEVEL_COLOURS)} if by == "risk level" else None,
                 labels={"group": by, "count": metric, "time": ""})
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=10, b=10), legend_title_text=by)
    st.plotly_chart(fig, key="ov_series")
else:
    st.info(f"No {metric} events in this period.")

st.subheader("Where sign-ins come from")
places = q(insights.locations, **s)
if len(places):
    outline = st.toggle("Country outlines (your browser loads them from cdn.plot.ly)", value=False, key="ov_outline")
    # plotly reads a subset of HTML in texts and hover labels (<b>, <a href=...>): place names are data, so escape
    places = places.assign(size=places["events"].clip(lower=1) ** 0.5,
                           city=places["city"].map(_plotly_text), country=places["country"].map(_plotly_text))
    fig = px.scatter_geo(
        places, lat="latitude", lon="longitude", color="top_level", size="size",
        color_discrete_map=LEVEL_COLOURS, category_orders={"top_level": list(LEVEL_COLOURS)},
        hover_name="city", hover_data={"country": True, "events": True, "risky": True, "high": True,
                                       "blocked": True, "size": False, "latitude": False, "longitude": False},
        projection="natural earth", labels={"top_level": "highest level"}, text="city",
    )
    fig.update_traces(textposition="top center", textfont_size=10)
    # no base layer unless asked: plotly fetches the outlines from its CDN, which an offline server may not reach
    fig.update_geos(showland=outline, showcountries=outline, showcoastlines=outline, showocean=False,
                    showlakes=False, showrivers=False, showframe=True,
                    lataxis_showgrid=True, lonaxis_showgrid=True, landcolor="#eeeeee", fitbounds=False,
                    lataxis_range=[-60, 85], lonaxis_range=[-180, 180])
    fig.update_layout(height=420, margin=dict(l=0, r=0, t=0, b=0))
    st.plotly_chart(fig, key="ov_map")
    st.caption(f"{len(places):,} places; the colour is the highest risk level seen there, the size the sign-ins.")
else:
    st.info("No sign-in with a known location in this period.")

st.subheader("Top risky")
tabs = st.tabs(["Users", "IPs", "Networks", "ASNs"])
for tab, by_key in zip(tabs, insights.TOP_BY):
    with tab:
        top = q(insights.top_risky, by_key, n=10, **s)
        if len(top):
            st.dataframe(top, hide_index=True, key=f"ov_top_{by_key}",
                         column_config={"max_score": st.column_config.NumberColumn(format="%.3f")})
        else:
            st.info("No risky events in this period.")
