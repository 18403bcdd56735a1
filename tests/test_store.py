import pytest

from ingest import store
from ingest.errors import StoreError


def test_first_use_creates_and_records_migrations_once(tmp_path):
    db = tmp_path / "s.duckdb"
    con = store.connect(db)
    assert store.applied_migrations(con) == ["0001_ingest_tables"]
    for t in ("events", "quarantine", "users", "labels", "ingest_runs"):
        assert store.count(con, t) == 0
    con.close()
    con = store.connect(db)
    assert store.migrate(con, store.MIGRATIONS) == []  # nothing applied twice
    con.close()


def test_a_failing_migration_changes_nothing_and_names_itself(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    bad = store.Migration("9999_broken", ("CREATE TABLE ok_table (a INT)", "CREATE TABLE events (x INT)"))
    with pytest.raises(StoreError, match="migration 9999_broken failed"):
        store.migrate(con, [bad])
    assert "9999_broken" not in store.applied_migrations(con)
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'ok_table'").fetchall() == [(0,)]


def test_db_path_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("RISKGATE_DB", raising=False)
    assert store.resolve_db_path() == "riskgate.duckdb"
    monkeypatch.setenv("RISKGATE_DB", str(tmp_path / "env.duckdb"))
    assert store.resolve_db_path() == str(tmp_path / "env.duckdb")
    assert store.resolve_db_path(tmp_path / "opt.duckdb") == str(tmp_path / "opt.duckdb")
    with pytest.raises(StoreError, match="does not exist"):
        store.connect(tmp_path / "no" / "such" / "dir.duckdb")


def test_sql_values_are_bound_not_formatted(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    store.start_run(con, "r1", ["x'); DROP TABLE events; --"], "riskgate-jsonl")
    assert store.recent_runs(con)[0]["inputs"] == '["x\'); DROP TABLE events; --"]'
    assert store.count(con, "events") == 0
    with pytest.raises(ValueError):
        store.count(con, "events; DROP TABLE users")


def test_ids_and_device_data_are_stored_uncompressed_and_read_back_whole(tmp_path):
    # event ids and EncodedData are all different: compressing them was about a sixth of writing the events
    # (ingest.store.UNCOMPRESSED_EVENT_COLUMNS); the other text columns keep DuckDB's compression
    from ingest.enrich import Enricher
    from ingest.geo import GeoResolver
    from ingest.pipeline import ingest_paths
    from tests.events_gen import event, write_jsonl
    from tests.geo_fixtures import build

    src = tmp_path / "e.jsonl"
    evs = [event(i) for i in range(4000)]
    for i, ev in enumerate(evs):
        ev["ContextData"]["EncodedData"] = f"device-data-{i % 7:04d}-" * 4
    write_jsonl(src, evs)
    con = store.connect(tmp_path / "s.duckdb")
    city, asn = build(tmp_path)
    assert ingest_paths(con, [str(src)], enricher=Enricher(geo=GeoResolver(str(city), str(asn)))).events_added == 4000
    con.execute("CHECKPOINT")
    compression = dict(con.execute(
        """SELECT column_name, string_agg(DISTINCT compression, ',') FROM pragma_storage_info('events')
           WHERE segment_type = 'VARCHAR' GROUP BY column_name""").fetchall())
    assert compression["event_id"] == "Uncompressed"
    assert compression["encoded_data"] == "Uncompressed"
    assert "Uncompressed" not in compression["username"]  # 50 names repeated: compressed
    assert con.execute("SELECT event_id, encoded_data FROM events ORDER BY event_id LIMIT 1").fetchall() == [
        ("ev-0000000", "device-data-0000-" * 4)]


def test_uncompressed_columns_must_exist():
    import pyarrow as pa

    with pytest.raises(ValueError, match=r"no column \['evnet_id'\] in the schema of t"):
        store._create_table_sql("t", pa.schema([("event_id", pa.string())]), uncompressed=["evnet_id"])
