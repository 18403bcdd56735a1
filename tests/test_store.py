import duckdb
import pytest

from ingest import store
from ingest.errors import StoreError


def test_first_use_creates_and_records_migrations_once(tmp_path):
    db = tmp_path / "s.duckdb"
    con = store.connect(db)
    assert store.applied_migrations(con) == ["0001_ingest_tables", "0002_users_per_pool", "0003_store_keys"]
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
        store.migrate(con, [*store.MIGRATIONS, bad])
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


def _damaged_copies(tmp_path):
    """A real store file, then a copy with bytes overwritten inside its blocks and a copy cut short."""
    import shutil

    from risk import store as rstore

    db = tmp_path / "s.duckdb"
    with rstore.connect(db) as con:
        con.execute("CREATE TABLE filler AS SELECT range AS i, md5(range::VARCHAR) AS h FROM range(200000)")
        con.execute("CHECKPOINT")
    corrupt, cut = tmp_path / "corrupt.duckdb", tmp_path / "cut.duckdb"
    shutil.copy(db, corrupt)
    with open(corrupt, "r+b") as f:
        size = f.seek(0, 2)
        for off in range(12288 + 100, size, 262144):
            f.seek(off)
            f.write(b"\xaa" * 64)
    cut.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    return db, corrupt, cut


def test_a_damaged_store_is_one_clear_error_at_once(tmp_path):
    """A checksum error ("... in block at ...") used to be taken for a lock ("block") and waited out the whole
    RISKGATE_STORE_WAIT; a file cut short raised a raw DuckDB error from the migrations' first query."""
    import time

    _db, corrupt, cut = _damaged_copies(tmp_path)
    t = time.monotonic()
    with pytest.raises(StoreError, match="cannot open the store: .*checksum"):
        store.connect(corrupt, wait=60)
    assert time.monotonic() - t < 10
    with pytest.raises(StoreError, match="cannot (open|read) the store"):
        store.connect(cut, wait=60)


def test_a_read_only_command_on_a_store_not_migrated_for_it_names_the_fix(tmp_path):
    """`riskgate whatif` opens read-only and cannot migrate: on a store that was only ingested it failed with a
    CatalogException traceback; it now says what to run. A read-write command migrates, and whatif then runs."""
    import subprocess
    import sys

    db = tmp_path / "ingested.duckdb"
    store.connect(db).close()  # what `riskgate ingest` leaves: ingest's tables only

    def rg(*args):
        return subprocess.run([sys.executable, "-m", "cli", *args, "--db", str(db)], capture_output=True, text=True,
                              timeout=120)

    r = rg("whatif")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "the store lacks a table this command reads" in r.stderr and "`riskgate models --db PATH`" in r.stderr
    assert rg("models").returncode == 0  # read-write: migrated
    r = rg("whatif")
    assert r.returncode == 2 and "no assessed sign-ins" in r.stderr, r.stderr


def _record(path, name):
    raw = duckdb.connect(str(path))
    try:
        raw.execute("INSERT INTO schema_migrations VALUES (?, now())", [name])
    finally:
        raw.close()


@pytest.mark.parametrize("read_only", [False, True])
def test_a_store_of_a_newer_riskgate_is_refused_naming_what_this_version_does_not_know(tmp_path, read_only):
    import risk.store

    db = tmp_path / "s.duckdb"
    risk.store.connect(db).close()
    _record(db, "0099_future_table")
    for connect in (store.connect, risk.store.connect):
        with pytest.raises(StoreError, match=r"newer riskgate.*0099_future_table") as e:
            connect(db, read_only=read_only)
        assert str(db) in str(e.value)


def test_a_newer_risk_migration_is_risks_business_not_ingests(tmp_path):
    import risk.store

    db = tmp_path / "s.duckdb"
    risk.store.connect(db).close()
    _record(db, "risk_model_0099_future")
    store.connect(db).close()  # ingest knows its own tables only: a later risk change is not its concern
    with pytest.raises(StoreError, match="risk_model_0099_future"):
        risk.store.connect(db)


def test_read_only_on_tables_of_an_older_shape_says_to_migrate_and_read_write_does_it(tmp_path):
    import risk.store

    db = tmp_path / "s.duckdb"
    risk.store.connect(db).close()
    raw = duckdb.connect(str(db))  # the users table as riskgate had it before 0002_users_per_pool
    raw.execute("DROP TABLE users")
    raw.execute("CREATE TABLE users (username VARCHAR PRIMARY KEY, user_pool_id VARCHAR, user_sub VARCHAR, "
                "user_status VARCHAR, enabled BOOLEAN, mfa_settings VARCHAR[], preferred_mfa VARCHAR, email VARCHAR, "
                "created_at TIMESTAMPTZ, modified_at TIMESTAMPTZ, attributes VARCHAR)")
    raw.execute("DELETE FROM schema_migrations WHERE name = '0002_users_per_pool'")
    raw.close()
    with pytest.raises(StoreError, match=r"older shape \(0002_users_per_pool.*open it once read-write"):
        risk.store.connect(db, read_only=True)
    risk.store.connect(db).close()  # migrates
    with risk.store.connect(db, read_only=True) as con:
        assert "pool_key" in [r[0] for r in con.execute("DESCRIBE users").fetchall()]


def test_read_only_on_a_store_only_ingest_has_opened_is_fine(tmp_path):
    import risk.store

    db = tmp_path / "s.duckdb"
    store.connect(db).close()  # ingest's tables only: risk's are missing altogether, not in an older shape
    with risk.store.connect(db, read_only=True) as con:
        assert store.count(con, "events") == 0
