"""Configuration: the pool's and clients' risk configurations, edited with validation, versions and their diff; the mode."""

from __future__ import annotations

import json

import streamlit as st

from dashboards import common
from dashboards.common import code, md, q
from ingest.errors import ConfigurationError, RiskgateError
from risk import config as rc
from risk import insights

POOL_LEVEL = "(pool level)"
ACTIONS = [a.value for a in rc.AccountTakeoverEventAction]
ACTIONS.sort(key=lambda a: rc.ACTION_ORDER[rc.AccountTakeoverEventAction(a)])
CC_ACTIONS = [a.value for a in rc.CompromisedCredentialsEventAction]
FILTERS = [f.value for f in rc.EventFilterType]
MODES = [m.value for m in rc.AdvancedSecurityMode]

st.title("Configuration")

bounds = q(insights.store_bounds)
s = common.scope()
pools = bounds["pools"] or [q(rc.choose_pool, None)]
c1, c2 = st.columns(2)
pool = c1.selectbox("User pool", pools, index=pools.index(s["pool"]) if s["pool"] in pools else 0, key="cfg_pool")
clients = [POOL_LEVEL, *bounds["clients"]]
client_choice = c2.selectbox("App client", clients, key="cfg_client",
                             help="A client's own configuration replaces the pool's for that client.")
client = None if client_choice == POOL_LEVEL else client_choice
scope_key = f"{pool}|{client or ''}"

msg = st.session_state.pop("cfg_msg", None)
if msg:
    (st.success if msg[0] == "success" else st.error)(msg[1])

# -- mode ----------------------------------------------------------------------------------------

mode, mode_version = q(rc.get_mode, pool)
st.subheader("AdvancedSecurityMode")
m1, m2 = st.columns([2, 3])
m1.metric(f"Mode of {code(pool)}", str(mode),
          help=f"set by version {mode_version}" if mode_version else "default (never set)")


def _ask_mode() -> None:
    st.session_state["cfg_mode_pending"] = (pool, st.session_state[f"cfg_mode_new_{pool}"])


def _confirm_mode() -> None:
    target_pool, new = st.session_state.pop("cfg_mode_pending")
    try:
        with common.write_store() as con:
            v = rc.set_mode(con, new, target_pool)
    except RiskgateError as exc:
        st.session_state["cfg_msg"] = ("error", f"mode not changed: {md(exc)}")
    else:
        st.session_state["cfg_msg"] = ("success", f"version {v.version}: {md(v.summary)}")


def _cancel(key: str) -> None:
    st.session_state.pop(key, None)


with m2:
    others = [m for m in MODES if m != str(mode)]
    st.selectbox("Switch to", others, key=f"cfg_mode_new_{pool}")
    pending = st.session_state.get("cfg_mode_pending")
    if pending and pending[0] == pool:
        effect = {"ENFORCED": "Blocks and MFA challenges will apply to real users.",
                  "AUDIT": "Risk is evaluated and recorded; nobody is blocked, challenged or emailed.",
                  "OFF": "No risk evaluation at all."}[pending[1]]
        st.warning(f"Switch {code(pool)} from {mode} to **{pending[1]}**? {effect}")
        b1, b2 = st.columns(2)
        b1.button(f"Confirm: switch to {pending[1]}", key="cfg_mode_confirm", type="primary", on_click=_confirm_mode)
        b2.button("Cancel", key="cfg_mode_cancel", on_click=_cancel, args=("cfg_mode_pending",))
    else:
        st.button("Switch mode…", key="cfg_mode_ask", on_click=_ask_mode)

# -- the configuration that applies ---------------------------------------------------------------

resolved = q(rc.resolve_detail, pool, client)
origin = {"client": "the client's own configuration", "pool": "the pool's configuration",
          "defaults": "the shipped defaults"}[resolved.origin]
st.subheader("Risk configuration")
st.caption(f"What applies to {'client ' + code(client) if client else 'the pool'}: {origin}, version {resolved.version}"
           + (f", last modified {resolved.last_modified:%Y-%m-%d %H:%M} UTC" if resolved.last_modified else ""))
doc = rc.describe_resolved(resolved)["RiskConfiguration"]
cfg = resolved.configuration
errors: dict = st.session_state.get("cfg_errors", {}).get(scope_key, {})


def _field_errors(name: str, where=st) -> None:
    for message in errors.get(name, []):
        where.error(md(message), icon=":material/error:")  # it quotes the document: shown literally


def _k(name: str) -> str:
    return f"cfg_{scope_key}_{name}"


def _lines(text: str) -> list[str]:
    return [x.strip() for x in (text or "").replace(",", "\n").splitlines() if x.strip()]


def _validate(document: dict | None, text: str | None = None) -> None:
    """Validate the form's (or the raw editor's) document; on success ask for confirmation."""
    st.session_state.pop("cfg_pending", None)
    try:
        new = rc.load_text(text, source="editor") if text is not None else rc.validate_document(document)
    except rc.RiskConfigurationError as exc:
        by_field: dict[str, list[str]] = {}
        for p in exc.problems:
            field = "raw" if text is not None else insights.problem_field(p.path)
            by_field.setdefault(field, []).append(str(p))
        st.session_state.setdefault("cfg_errors", {})[scope_key] = by_field
        return
    except ConfigurationError as exc:
        st.session_state.setdefault("cfg_errors", {})[scope_key] = {"raw" if text is not None else "general": [str(exc)]}
        return
    field = "raw" if text is not None else "general"
    scope_problems = insights.config_scope_problems(new, pool, client)  # the page's pool and client, not another
    if scope_problems:
        st.session_state.setdefault("cfg_errors", {})[scope_key] = {field: scope_problems}
        return
    try:
        plan = insights.config_save_plan(common.read_store(), new, pool, client)  # what will be stored, really
    except RiskgateError as exc:
        st.session_state.setdefault("cfg_errors", {})[scope_key] = {field: [str(exc)]}
        return
    st.session_state.setdefault("cfg_errors", {})[scope_key] = {}
    st.session_state["cfg_pending"] = (scope_key, pool, client, new.to_document(), plan, rc.lint(new))


def _validate_form() -> None:
    ss = st.session_state
    filt = None if ss[_k("cc_all")] else list(ss[_k("cc_filter")])
    document = insights.form_document(
        doc,
        actions={lvl: (ss[_k(f"ato_{lvl}")], ss[_k(f"notify_{lvl}")]) for lvl in ("Low", "Medium", "High")},
        cc_action=ss[_k("cc_action")], cc_filter=filt,
        blocked=_lines(ss[_k("blocked")]), skipped=_lines(ss[_k("skipped")]),
        notify_from=ss[_k("from")], reply_to=ss[_k("reply_to")], source_arn=ss[_k("source_arn")],
    )
    _validate(document)


def _validate_raw() -> None:
    _validate(None, st.session_state[_k("raw")])


def _save() -> None:
    key, target_pool, target_client, document, _plan, _warnings = st.session_state.pop("cfg_pending")
    try:
        new = rc.validate_document(document)
        with common.write_store() as con:
            v = rc.set_configuration(con, new, user_pool_id=target_pool, client_id=target_client, source="dashboard")
    except RiskgateError as exc:
        st.session_state["cfg_msg"] = ("error", f"configuration not saved: {md(exc)}")
    else:
        st.session_state["cfg_msg"] = ("success", f"version {v.version}: {md(v.scope)}: {md(v.summary)}")


form_tab, raw_tab, history_tab = st.tabs(["Edit", "Document (JSON / YAML)", "History and diff"])

with form_tab:
    ato = cfg.AccountTakeoverRiskConfiguration
    nc = ato.NotifyConfiguration if ato else None
    cc = cfg.CompromisedCredentialsRiskConfiguration
    rec = cfg.RiskExceptionConfiguration
    with st.form(f"cfg_form_{scope_key}"):
        _field_errors("general")
        st.markdown("**Account takeover: action per risk level** "
                    "(a higher level may not get a less restrictive action)")
        cols = st.columns(3)
        for col, lvl in zip(cols, ("Low", "Medium", "High")):
            a = cfg.action_for(lvl)
            current = str(a.EventAction) if a else "NO_ACTION"
            col.selectbox(f"{lvl}Action", ACTIONS, index=ACTIONS.index(current), key=_k(f"ato_{lvl}"))
            col.checkbox("Notify", value=bool(a and a.Notify), key=_k(f"notify_{lvl}"))
            _field_errors(f"ato_{lvl}", col)
        st.markdown("**Notification sender** (the templates are kept; edit them in the Document tab)")
        cols = st.columns(3)
        cols[0].text_input("From", value=(nc.From or "") if nc else "", key=_k("from"))
        _field_errors("from", cols[0])
        cols[1].text_input("ReplyTo", value=(nc.ReplyTo or "") if nc else "", key=_k("reply_to"))
        _field_errors("reply_to", cols[1])
        cols[2].text_input("SourceArn", value=nc.SourceArn if nc else "", key=_k("source_arn"))
        _field_errors("source_arn", cols[2])
        st.markdown("**Compromised credentials**")
        cols = st.columns(3)
        cols[0].selectbox("EventAction", CC_ACTIONS,
                          index=CC_ACTIONS.index(str(cc.Actions.EventAction)) if cc else CC_ACTIONS.index("NO_ACTION"),
                          key=_k("cc_action"))
        _field_errors("cc_action", cols[0])
        cols[1].checkbox("All events (no EventFilter)", value=cc is None or cc.EventFilter is None, key=_k("cc_all"))
        cols[2].multiselect("EventFilter", FILTERS, default=[str(f) for f in (cc.EventFilter or [])] if cc else [],
                            key=_k("cc_filter"))
        _field_errors("cc_filter", cols[2])
        st.markdown("**IP ranges** (CIDR, one per line, at most 200 each)")
        cols = st.columns(2)
        cols[0].text_area("BlockedIPRangeList: always blocked", value="\n".join(rec.BlockedIPRangeList or []) if rec else "",
                          key=_k("blocked"))
        _field_errors("blocked", cols[0])
        cols[1].text_area("SkippedIPRangeList: never scored", value="\n".join(rec.SkippedIPRangeList or []) if rec else "",
                          key=_k("skipped"))
        _field_errors("skipped", cols[1])
        st.form_submit_button("Validate…", type="primary", on_click=_validate_form)

with raw_tab:
    st.text_area("The whole document (JSON or YAML, as for set-risk-configuration)",
                 value=json.dumps(doc, indent=2), height=360, key=_k("raw"))
    _field_errors("raw")
    st.button("Validate document…", key=_k("raw_validate"), on_click=_validate_raw)

pending = st.session_state.get("cfg_pending")
if pending and pending[0] == scope_key:
    _, _, _, _, plan, warnings = pending
    target = f"app client {code(client)} of pool {code(pool)}" if client else f"pool {code(pool)}"
    with st.container(border=True):
        if not plan["reset"]:
            st.markdown(f"**Valid.** Save as a new version of the configuration of {target}?")
        elif client:
            st.markdown(f"**Valid, but it configures nothing:** saving it resets {target}: its own configuration "
                        "is dropped and it uses the pool's again.")
        else:
            st.markdown(f"**Valid, but it configures nothing:** saving it resets {target} to the shipped default "
                        "configuration.")
        st.markdown(f"What will apply to {'the client' if client else 'the pool'}: {code(plan['applies'])}")
        for w in warnings:
            st.warning(md(w))
        b1, b2 = st.columns(2)
        b1.button("Confirm: reset" if plan["reset"] else "Confirm: save new version", key="cfg_save_confirm",
                  type="primary", on_click=_save)
        b2.button("Cancel", key="cfg_save_cancel", on_click=_cancel, args=("cfg_pending",))

with history_tab:
    versions = q(rc.history, pool)
    if versions:
        st.dataframe([v.to_dict() for v in versions], hide_index=True, key="cfg_history",
                     column_order=("version", "changed_at", "scope", "kind", "mode", "summary", "source"))
    else:
        st.info("No version stored yet: the shipped defaults apply (version 0).")
    documents = [*[v.version for v in versions if v.kind != rc.KIND_MODE], 0]  # newest first; 0 = the defaults
    if len(documents) > 1:
        d1, d2 = st.columns(2)
        old = d1.selectbox("From version", documents, index=1, key="cfg_diff_old")
        new_v = d2.selectbox("To version", documents, index=0, key="cfg_diff_new")
        diff = q(insights.config_diff, old, new_v)
        st.code(diff or "(no difference)", language="diff")
