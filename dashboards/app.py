"""riskgate's dashboard: ``riskgate dashboard`` runs ``streamlit run dashboards/app.py``.

The entry script: the login gate, the scope in the sidebar, and the six pages
(``dashboards/views/*.py``). Pages only draw: every number comes from a named
function of the packages (mostly ``risk.insights``), through
``dashboards.common.q``; the store is open only while a script run needs it.
"""

from __future__ import annotations

import duckdb
import streamlit as st

from dashboards import auth, common
from ingest.errors import RiskgateError

st.set_page_config(page_title="riskgate", page_icon="🛡️", layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/monitoring:", default=True),
    st.Page("views/events.py", title="Events", icon=":material/table_rows:"),
    st.Page("views/user.py", title="User", icon=":material/person_search:"),
    st.Page("views/tuning.py", title="Tuning", icon=":material/tune:"),
    st.Page("views/configuration.py", title="Configuration", icon=":material/settings:"),
    st.Page("views/jobs.py", title="Jobs", icon=":material/work_history:"),
]

common.warm_up()
try:
    auth.require_login()
    page = st.navigation(PAGES)
    try:
        st.session_state["_rg_scope"] = common.scope_sidebar()
    except (RiskgateError, duckdb.Error) as exc:  # the store cannot be read: say why, draw no page
        common.show_error(exc)
        st.stop()
    page.run()
finally:
    common.end_run()
scope = st.session_state.get("_rg_scope")
if scope:  # the page is drawn: prepare the Tuning page's history meanwhile
    common.prefetch_tuning(scope["since"], scope["until"])
