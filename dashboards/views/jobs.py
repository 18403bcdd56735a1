"""Jobs: recent ingests and scoring runs with their counts, and why rows were quarantined."""

from __future__ import annotations

import streamlit as st

from dashboards.common import code, md, q
from ingest.errors import counted
from risk import insights

st.title("Jobs")

st.subheader("Ingests")
ingests = q(insights.ingest_runs, 20)
if len(ingests):
    st.dataframe(ingests, hide_index=True, key="jobs_ingests",
                 column_order=("status", "started_at", "source_format", "rows_read", "events_added", "duplicates",
                               "quarantined", "inputs", "finished_at", "reasons", "run_id"))
    st.caption("rows read = events added + duplicates + quarantined, for every finished run.")
else:
    st.info("No ingest yet (riskgate ingest).")

st.subheader("Scoring runs")
runs = q(insights.score_runs, 20)
if len(runs):
    st.dataframe(runs, hide_index=True, key="jobs_scoring",
                 column_order=("status", "started_at", "events_scored", "seconds", "model_version",
                               "thresholds_version", "since", "until", "rescore", "finished_at", "run_id"),
                 column_config={"seconds": st.column_config.NumberColumn(format="%.1f")})
else:
    st.info("No scoring run yet (riskgate score).")

st.subheader("Quarantine")
TOP_REASONS = 50
totals = q(insights.quarantine_totals)
if not totals["rows"]:
    st.info("Nothing quarantined.")
    st.stop()
reasons = q(insights.quarantine_reasons, TOP_REASONS)
st.markdown(f"**{counted(totals['rows'], 'row')}** quarantined for {counted(totals['reasons'], 'distinct reason')}"
            + (f" (the {TOP_REASONS} most frequent shown)." if totals["reasons"] > TOP_REASONS else "."))
st.dataframe(reasons, hide_index=True, key="jobs_reasons")
reason = st.selectbox("Examples of", reasons["reason"].tolist(), key="jobs_reason")
examples = q(insights.quarantine_examples, reason, 5)
for ex in examples.itertuples():
    st.markdown(f"{code(ex.file)} line {ex.line} ({md(ex.format)})")
    st.code(ex.raw or "", language=None, wrap_lines=True)
