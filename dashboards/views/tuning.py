"""Tuning: move the Low / Medium / High thresholds, see what would change, apply with a confirmation."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from dashboards import common
from dashboards.common import md, q
from ingest.errors import RiskgateError, counted
from risk import insights, levels
from risk.tuning import Targets, TuningError, tune_of


def _curve_figure(x, y, thresholds, mark_x, mark_y, mark_text, text_position: str, **layout):
    """A curve (hover: the score threshold of each point) with the current levels marked on it."""
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", customdata=thresholds, hovertemplate="score ≥ %{customdata:.3f}"))
    fig.add_trace(go.Scatter(x=mark_x, y=mark_y, mode="markers+text", text=mark_text, textposition=text_position,
                             name="thresholds"))
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=30, b=10), showlegend=False, **layout)
    return fig


s = common.scope()
st.title("Tuning")
st.caption(common.describe_scope(s).split(" · ")[0] + " · every pool and client (thresholds are store-wide) · "
           "outcomes as ENFORCED would act, with the configuration in force")

current, version = q(levels.current_thresholds)
for name in ("low", "medium", "high"):
    st.session_state.setdefault(f"tn_{name}", float(getattr(current, name)))

msg = st.session_state.pop("tn_msg", None)
if msg:
    {"success": st.success, "info": st.info}.get(msg[0], st.error)(msg[1])

try:
    with st.spinner("Reading the assessed history …"):
        snap = common.tuning_snapshot(s["since"], s["until"])
except TuningError as exc:
    st.info(md(exc))
    st.stop()


def _share_target(percent: float | None) -> float | None:
    """A target typed in percent as a share; 0 % is a target (nothing at all), only an empty input is none."""
    return None if percent is None else percent / 100


def _suggest() -> None:
    """Set the sliders to what ``risk.tuning.tune`` proposes for the targets (on the prepared history)."""
    ss = st.session_state
    try:
        targets = Targets(max_challenged=_share_target(ss.get("tn_target_challenged")),
                          max_blocked=_share_target(ss.get("tn_target_blocked")))
        result = tune_of(snap.history, snap.outcomes, current, version, targets)  # thresholds and version of one read
    except RiskgateError as exc:
        ss["tn_msg"] = ("error", f"no suggestion: {exc}")
        return
    for name, value in result.thresholds.to_dict().items():
        ss[f"tn_{name}"] = value  # exact: rounded, the sliders had missed the targets the suggestion met
    ss["tn_msg"] = ("success" if result.met else "error",
                    ("Targets met: " if result.met else "Targets not met: ") + "; ".join(result.notes or ["-"]))


with st.expander("Suggest thresholds from targets (risk.tuning.tune)"):
    t1, t2, t3 = st.columns([2, 2, 1])
    t1.number_input("At most % of legitimate events challenged or blocked", 0.0, 100.0, 1.0, 0.1,
                    key="tn_target_challenged")
    t2.number_input("At most % of legitimate events blocked", 0.0, 100.0, 0.1, 0.05, key="tn_target_blocked")
    t3.button("Suggest", key="tn_suggest", on_click=_suggest)

st.markdown(f"**Thresholds in force** (version {version}): Low {current.low:g} · Medium {current.medium:g} · "
            f"High {current.high:g}")
cols = st.columns(3)
for col, name in zip(cols, ("low", "medium", "high")):
    col.slider(f"{name.capitalize()} at score ≥", 0.0, 1.0, step=0.0001, format="%.4f", key=f"tn_{name}")
try:
    t = levels.Thresholds(st.session_state["tn_low"], st.session_state["tn_medium"], st.session_state["tn_high"])
except levels.ThresholdsError as exc:
    st.error(md(exc))
    st.stop()

# "in force" is the thresholds read above (cached like every query, CACHE_TTL_S), not those the longer-lived
# snapshot was prepared with: the header, the deltas and the "all, in force" row then agree
trade = insights.tradeoff_from(snap, t, current)
what = insights.whatif_from(snap, t, current)
if trade["warnings"]:
    st.warning("\n".join(f"- {md(w)}" for w in trade["warnings"]))  # they quote labels: shown literally


def _rate(r: dict) -> str:
    if r["rate"] is None:
        return "-"
    ci = f" ({r['ci'][0]:.2%}–{r['ci'][1]:.2%})" if r["ci"] else ""
    return f"{r['rate']:.2%}{ci}"


def _delta(key: str) -> str | None:
    new, old = trade["outcomes"][key]["rate"], trade["current_outcomes"][key]["rate"]
    if new is None or old is None or abs(new - old) < 5e-5:
        return None
    return f"{(new - old) * 100:+.2f} pts"


def _share(r: dict) -> str:
    return "-" if r["rate"] is None else f"{r['rate']:.2%}"


o = trade["outcomes"]
m = st.columns(4)
m[0].metric("Legitimate challenged or blocked", _share(o["legitimate_challenged_or_blocked"]),
            _delta("legitimate_challenged_or_blocked"), delta_color="inverse",
            help="Because of their risk level (users with MFA of their own are challenged anyway). 95 % Wilson interval.")
m[1].metric("Legitimate blocked", _share(o["legitimate_blocked"]), _delta("legitimate_blocked"), delta_color="inverse")
m[2].metric("Attacks stopped", _share(o["attacks_stopped"]), _delta("attacks_stopped"),
            help="Challenged with MFA or blocked.")
m[3].metric("Precision", _share(o["precision"]), _delta("precision"),
            help="Attacks among the labelled events the risk level challenges or blocks.")
st.caption(f"{counted(trade['events'], 'assessed event')} (every event type): {trade['legitimate']:,} legitimate, "
           f"{counted(trade['attacks'], 'attack')} "
           "(labels and feedback). 95 % intervals: " + " · ".join(
               f"{name} {_rate(o[key])}" for name, key in (("challenged or blocked", "legitimate_challenged_or_blocked"),
                                                          ("blocked", "legitimate_blocked"),
                                                          ("stopped", "attacks_stopped"), ("precision", "precision")))
           + ". Deltas against the thresholds in force.")

left, right = st.columns(2)
with left:
    st.subheader("Per level")
    st.dataframe(
        [{"level": r["level"], "threshold": r["threshold"], "action": ", ".join(r["actions"]),
          "legitimate at or above": _rate(r["legitimate_at_or_above"]),
          "attacks at or above": _rate(r["attacks_at_or_above"]), "precision": _rate(r["precision"])}
         for r in trade["levels"]],
        hide_index=True, key="tn_levels",
    )
    st.subheader("Attacks stopped, by type")
    by_type = o["attacks_stopped_by_type"]
    if by_type:
        st.dataframe([{"attack type": k, "stopped": v["count"], "of": v["of"], "rate": _rate(v)}
                      for k, v in by_type.items()], hide_index=True, key="tn_types")
    else:
        st.info("No labelled attacks in the period.")
with right:
    st.subheader("What if (allowed / challenged / blocked)")
    rows = [{"events": "all, proposed", **{k: what["outcomes"][k] for k in ("Allow", "MfaChallenge", "Block")}},
            {"events": "all, in force", **{k: what["current"][k] for k in ("Allow", "MfaChallenge", "Block")}}]
    rows += [{"events": f"{label}, proposed", **{k: c[k] for k in ("Allow", "MfaChallenge", "Block")}}
             for label, c in what["by_label"].items()]
    st.dataframe(rows, hide_index=True, key="tn_whatif")
    st.caption(f"{counted(what['changed'], 'event')} would get another outcome. Modes in force: "
               f"{', '.join(what['modes']) or '-'} (outcomes shown as ENFORCED would act).")

st.subheader("ROC and precision-recall curves of the score")
try:
    cv = common.tuning_curves(s["since"], s["until"])
except TuningError as exc:
    st.info(md(exc))
    cv = None
if cv is not None:
    marks = trade["levels"]
    c1, c2 = st.columns(2)
    roc = _curve_figure(cv["roc"]["fpr"], cv["roc"]["tpr"], cv["roc"]["threshold"],
                        [r["legitimate_at_or_above"]["rate"] for r in marks],
                        [r["attacks_at_or_above"]["rate"] for r in marks], [r["level"] for r in marks],
                        "bottom right", title=f"ROC AUC {cv['roc_auc']:.4f}", xaxis_title="legitimate at or above",
                        yaxis_title="attacks at or above", xaxis_type="log")
    c1.plotly_chart(roc, key="tn_roc")
    pr = _curve_figure(cv["pr"]["recall"], cv["pr"]["precision"], cv["pr"]["threshold"],
                       [r["attacks_at_or_above"]["rate"] for r in marks],
                       [r["precision"]["rate"] for r in marks], [r["level"] for r in marks],
                       "bottom left", title=f"average precision {cv['average_precision']:.4f}",
                       xaxis_title="recall (attacks)", yaxis_title="precision")
    c2.plotly_chart(pr, key="tn_pr")


def _ask_apply() -> None:
    st.session_state["tn_pending"] = t.to_dict()


def _apply() -> None:
    from risk import tuning as rt
    from risk.model.registry import active_version

    proposed = levels.Thresholds(**st.session_state.pop("tn_pending"))
    try:
        with common.write_store() as con:
            # as `riskgate tune --apply`: thresholds read off one model's scores do not fit another's (read now,
            # not from the cached history: a model may have been trained since)
            active = active_version(con)
            stale = rt.scoring_models_warning(rt.scoring_models(con, since=s["since"], until=s["until"]), active)
            if stale and active is not None:
                raise TuningError(f"{stale}; nothing written")
            before = levels.current_thresholds(con)[1]
            v = levels.set_thresholds(con, proposed, source="dashboard")
    except RiskgateError as exc:
        st.session_state["tn_msg"] = ("error", f"thresholds not stored: {exc}")
    else:
        if v == before:  # equal to those in force: not stored again
            st.session_state["tn_msg"] = ("info", f"nothing stored: Low {proposed.low:g}, Medium {proposed.medium:g}, "
                                          f"High {proposed.high:g} are thresholds version {v}, already in force")
            return
        st.session_state["tn_msg"] = ("success", f"thresholds version {v} stored: Low {proposed.low:g}, Medium "
                                      f"{proposed.medium:g}, High {proposed.high:g}; the next scoring run uses them")


def _cancel() -> None:
    st.session_state.pop("tn_pending", None)


pending = st.session_state.get("tn_pending")
if pending:
    with st.container(border=True):
        st.warning(f"Store Low {pending['low']:g}, Medium {pending['medium']:g}, High {pending['high']:g} as thresholds "
                   f"version {version + 1}? The next `riskgate score` run uses them; assessments already made stay "
                   "as they were.")
        b1, b2 = st.columns(2)
        b1.button("Confirm: apply thresholds", key="tn_confirm", type="primary", on_click=_apply)
        b2.button("Cancel", key="tn_cancel", on_click=_cancel)
else:
    st.button("Apply these thresholds…", key="tn_apply", on_click=_ask_apply, disabled=t == current)

with st.expander("Thresholds history"):
    hist = q(levels.history)
    if hist:
        st.dataframe(hist, hide_index=True, key="tn_history")
    else:
        st.info("No version stored: the defaults (0.2 / 0.5 / 0.8, version 0) apply.")
