"""risk/credentials.py: Pwned Passwords in every layout, the shipped list, thresholds, filters, BLOCK."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from ingest.errors import ConfigurationError, InputFormatError
from risk import credentials as cred
from risk.credentials import CheckResult, CredentialChecker
from risk.store import connect

#: Passwords with the counts our synthetic Pwned Passwords data gives them.
KNOWN = {
    "correct horse battery staple": 5,
    "hunter2": 17_043,
    "Tr0ub4dor&3": 1,
    "zebra-umbrella-41": 250,
    "ünïcödé-pässwörd": 3,
    "P@ssw0rd!2024": 42,
    "letmein-please": 9,
    "snowflake#7": 64,
    "a": 100_000,
    "mixedCASEonly": 7,
}
UNKNOWN = "never-breached-9f3k2j"
PADDED = "only-in-padding-77"  # appears only as a count-0 padding line


def sha1(p: str) -> str:
    return hashlib.sha1(p.encode("utf-8")).hexdigest().upper()


def filler(n: int) -> list[tuple[str, int]]:
    """Extra hashes (of strings we never check) so the files have some size."""
    return [(sha1(f"filler-{i}"), i % 97 + 1) for i in range(n)]


def rows(n_filler: int = 300) -> list[tuple[str, int]]:
    return sorted([(sha1(p), c) for p, c in KNOWN.items()] + filler(n_filler) + [(sha1(PADDED), 0)])


def write_sorted(path: Path, data: list[tuple[str, int]], bad_at: tuple[int, ...] = (), eol: str = "\r\n") -> Path:
    lines = [f"{h}:{c}{eol}" for h, c in data]
    for i in sorted(bad_at, reverse=True):
        lines.insert(i, f"THIS IS NOT A HASH LINE{eol}")
    path.write_bytes("".join(lines).encode("ascii"))
    return path


def write_folder(folder: Path, data: list[tuple[str, int]], bad_prefix: str | None = None) -> Path:
    folder.mkdir()
    by_prefix: dict[str, list[str]] = {}
    for h, c in data:
        by_prefix.setdefault(h[:5], []).append(f"{h[5:]}:{c}\r\n")
    for prefix, lines in by_prefix.items():
        if prefix == bad_prefix:
            lines.insert(len(lines) // 2 if len(lines) > 1 else 0, "ZZZ:notanumber\r\n")
        (folder / f"{prefix}.txt").write_text("".join(lines), newline="")
    (folder / "README.md").write_text("not a range file")
    return folder


@pytest.fixture
def sorted_file(tmp_path) -> Path:
    return write_sorted(tmp_path / "pwned-passwords-sha1-ordered-by-hash-v8.txt", rows(), bad_at=(150,))


@pytest.fixture
def range_folder(tmp_path) -> Path:
    return write_folder(tmp_path / "ranges", rows(), bad_prefix=sha1("hunter2")[:5])


def assert_known_answers(lookup) -> None:
    for password, count in KNOWN.items():
        digest = hashlib.sha1(password.encode("utf-8")).digest()
        assert lookup.lookup(digest) == count, password
    assert lookup.lookup(hashlib.sha1(UNKNOWN.encode()).digest()) is None
    assert lookup.lookup(hashlib.sha1(PADDED.encode()).digest()) is None  # count-0 padding is no hit
    for h, c in filler(300)[::37]:
        assert lookup.lookup(bytes.fromhex(h)) == c


# -- the three layouts ----------------------------------------------------------------------------


def test_sorted_file_is_searched_in_place(sorted_file):
    with cred.open_pwned(sorted_file) as lookup:
        assert isinstance(lookup, cred.PwnedSortedFile)
        assert_known_answers(lookup)


@pytest.mark.parametrize("bad_at", [(0,), (1, 2, 3), (155, 156), (310,), tuple(range(0, 311, 7))])
def test_sorted_file_search_steps_over_malformed_lines(tmp_path, bad_at):
    path = write_sorted(tmp_path / "p.txt", rows(), bad_at=bad_at)
    with cred.PwnedSortedFile(path) as lookup:
        assert_known_answers(lookup)


def test_sorted_file_search_against_a_plain_scan_on_random_files(tmp_path):
    import random

    rng = random.Random(3)
    for trial in range(25):
        data = sorted((hashlib.sha1(f"{trial}-{i}".encode()).hexdigest().upper(), rng.randrange(0, 9))
                      for i in range(rng.randrange(1, 60)))
        bad = tuple(rng.sample(range(len(data) + 1), rng.randrange(0, min(8, len(data) + 1))))
        path = write_sorted(tmp_path / f"t{trial}.txt", data, bad_at=bad, eol=rng.choice(["\r\n", "\n"]))
        with cred.PwnedSortedFile(path) as lookup:
            for h, c in data:
                assert lookup.lookup(bytes.fromhex(h)) == (c or None), (trial, h)
            for i in range(10):
                assert lookup.lookup(hashlib.sha1(f"absent-{trial}-{i}".encode()).digest()) is None


def test_sorted_file_with_plain_newlines_and_no_final_newline(tmp_path):
    data = rows(40)
    path = tmp_path / "p.txt"
    path.write_text("\n".join(f"{h}:{c}" for h, c in data), newline="")
    with cred.PwnedSortedFile(path) as lookup:
        for password, count in KNOWN.items():
            assert lookup.lookup(hashlib.sha1(password.encode()).digest()) == count
        assert lookup.lookup(bytes.fromhex(data[-1][0])) == data[-1][1]


def test_range_folder(range_folder):
    with cred.open_pwned(range_folder, allow_partial=True) as lookup:
        assert isinstance(lookup, cred.PwnedRangeFolder)
        assert not lookup.complete
        assert_known_answers(lookup)


def test_build_from_sorted_file_reports_the_malformed_line_and_keeps_the_rest(sorted_file, tmp_path):
    out = tmp_path / "pp.rgpw"
    report = cred.build(sorted_file, out)
    n = len(rows())
    assert report.layout == "sorted-file"
    assert report.lines_read == n + 1
    assert report.hashes == n - 1  # the padding line is not a hash
    assert report.padding_skipped == 1
    assert report.records == n - 1
    assert report.issue_count == 1
    issue = report.issues[0]
    assert (issue.source, issue.line) == (str(sorted_file), 151)
    assert "no ':'" in issue.reason and "THIS IS NOT A HASH LINE" in issue.text
    assert out.stat().st_size == cred.DATA_OFFSET + (n - 1) * cred.RECORD_BYTES
    with cred.open_pwned(out) as lookup:
        assert isinstance(lookup, cred.PwnedIndex)
        assert lookup.records == n - 1
        assert_known_answers(lookup)


def test_build_from_range_folder_gives_the_same_index(sorted_file, range_folder, tmp_path):
    a = cred.build(sorted_file, tmp_path / "a.rgpw")
    b = cred.build(range_folder, tmp_path / "b.rgpw", allow_partial=True)
    assert b.layout == "range-folder"
    assert b.records == a.records
    bad = [i for i in b.issues if i.line is not None]
    assert len(bad) == 1 and Path(bad[0].source).name == sha1("hunter2")[:5] + ".txt"
    assert any(Path(i.source).name == "README.md" and i.line is None for i in b.issues)
    assert any(i.source == str(range_folder) and "incomplete range folder" in i.reason for i in b.issues)
    # same hashes, same counts: identical records and index (headers differ in line counts only)
    da = (tmp_path / "a.rgpw").read_bytes()
    db = (tmp_path / "b.rgpw").read_bytes()
    assert da[cred.HEADER_BYTES:] == db[cred.HEADER_BYTES:]


def test_build_default_output_path_and_verify(sorted_file):
    report = cred.build(sorted_file)
    assert report.out == str(sorted_file) + ".rgpw"
    checked = cred.verify(report.out)
    assert checked.layout == "index" and checked.records == report.records and checked.issue_count == 0
    assert checked.skipped_at_build == 1  # the source's bad line: information, not a problem of the index


def test_verify_reports_each_bad_line_with_its_number(tmp_path):
    path = write_sorted(tmp_path / "p.txt", rows(50), bad_at=(3, 20))
    seen = []
    report = cred.verify(path, on_issue=seen.append)
    assert [i.line for i in report.issues] == [4, 22]
    assert seen == report.issues


def test_bad_lines_of_each_kind_are_named(tmp_path):
    good = rows(5)
    path = tmp_path / "p.txt"
    lines = [f"{h}:{c}\r\n" for h, c in good]
    lines[2:2] = ["ABC:5\r\n", good[2][0][:-1] + "G:5\r\n", good[2][0] + ":lots\r\n", "\r\n"]
    path.write_text("".join(lines), newline="")
    reasons = [i.reason for i in cred.verify(path).issues]
    assert reasons == [
        "expected 40 hex digits before ':', found 3 characters",
        "hash is not hexadecimal",
        "count is not a whole number",
        "empty line",
    ]


def test_file_not_sorted_by_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(cred, "MAX_OUT_OF_ORDER", 5)
    data = rows(50)
    path = write_sorted(tmp_path / "by-count.txt", sorted(data, key=lambda r: -r[1]))
    with pytest.raises(InputFormatError, match="not sorted by hash"):
        cred.build(path, tmp_path / "x.rgpw")
    assert not (tmp_path / "x.rgpw").exists()
    assert not list(tmp_path.glob("x.rgpw.tmp*"))


def test_compressed_and_foreign_files_are_refused(tmp_path):
    gz = tmp_path / "p.txt.gz"
    gz.write_bytes(gzip.compress(b"0" * 40 + b":1\r\n"))
    with pytest.raises(InputFormatError, match="compressed"):
        cred.open_pwned(gz)
    other = tmp_path / "notes.txt"
    other.write_text("hello\nworld\n")
    with pytest.raises(InputFormatError, match="no SHA1:COUNT line"):
        cred.open_pwned(other)
    with pytest.raises(InputFormatError, match="no such file"):
        cred.open_pwned(tmp_path / "missing")
    index = tmp_path / "p.rgpw"
    cred.build(write_sorted(tmp_path / "p.txt", rows(5)), index)
    with pytest.raises(InputFormatError, match="already a riskgate index"):
        cred.build(index, tmp_path / "again.rgpw")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputFormatError, match="no range files"):
        cred.open_pwned(empty)


def test_an_index_into_a_missing_folder_is_refused_before_reading(tmp_path):
    src = write_sorted(tmp_path / "p.txt", rows(5))
    out = tmp_path / "nowhere" / "p.rgpw"
    with pytest.raises(InputFormatError, match=f"^{out}: folder {out.parent} does not exist$"):
        cred.build(src, out)
    assert not out.parent.exists()


def test_truncated_index_is_refused(sorted_file, tmp_path):
    out = tmp_path / "pp.rgpw"
    cred.build(sorted_file, out)
    out.write_bytes(out.read_bytes()[:-3])
    with pytest.raises(InputFormatError, match="truncated or damaged"):
        cred.open_pwned(out)


def test_merging_hashes_that_share_their_first_64_bits(tmp_path):
    base = "00112233445566778899AABBCCDDEEFF0011223"
    path = write_sorted(tmp_path / "p.txt", [(base + "0", 3), (base + "1", 8), ("F" * 40, 2)])
    report = cred.build(path, tmp_path / "p.rgpw")
    assert (report.records, report.merged) == (2, 1)
    with cred.PwnedIndex(tmp_path / "p.rgpw") as idx:
        assert idx.lookup(bytes.fromhex(base + "0")) == 8  # the larger count of the two
        assert idx.lookup(bytes.fromhex("F" * 40)) == 2


# -- the checker ------------------------------------------------------------------------------------------


def test_checker_uses_counts_and_minimum(sorted_file):
    with CredentialChecker(pwned=sorted_file, use_common_list=False) as checker:
        assert checker.check("hunter2") == CheckResult(True, 17_043, "pwned-passwords")
        assert checker.check("Tr0ub4dor&3") == CheckResult(True, 1, "pwned-passwords")
        assert checker.check(UNKNOWN) == CheckResult(False, 0, "pwned-passwords")
    with CredentialChecker(pwned=sorted_file, min_count=10, use_common_list=False) as checker:
        low = checker.check("correct horse battery staple")
        assert low == CheckResult(False, 5, "pwned-passwords")
        assert "below the minimum" in low.describe()
        assert checker.check("zebra-umbrella-41").compromised
        assert checker.check("letmein-please") == CheckResult(False, 9, "pwned-passwords")


@pytest.mark.parametrize("bad", [0, -3, 2.5, "5", True])
def test_min_count_must_be_a_whole_number_of_at_least_one(bad):
    with pytest.raises(ConfigurationError, match="min_count"):
        CredentialChecker(min_count=bad).check("x")


def test_shipped_common_list_works_offline_case_insensitively():
    checker = CredentialChecker()
    for password in ("123456", "password", "Password", "QWERTY", "iloveyou", "michael", "trustno1"):
        assert checker.check(password) == CheckResult(True, None, "common-passwords"), password
    assert checker.check("Zq8#not-common-at-all-1177") == CheckResult(False, 0, "common-passwords")
    assert checker.check("") == CheckResult(False, 0, "common-passwords")
    assert len(cred.common_password_digests()) == 40_101
    assert CredentialChecker(use_common_list=False).check("password") == CheckResult(False, 0, "none")


def test_common_list_has_no_counts_so_it_meets_any_threshold(sorted_file):
    assert CredentialChecker(min_count=1_000_000).check("password") == CheckResult(True, None, "common-passwords")
    # "a" is on the shipped list and seen 100,000 times: the list counts whatever N is (README) ...
    with CredentialChecker(pwned=sorted_file, min_count=200_000) as checker:
        assert checker.check("a") == CheckResult(True, None, "common-passwords")
        assert checker.check("dragon") == CheckResult(True, None, "common-passwords")
        assert checker.check(UNKNOWN) == CheckResult(False, 0, "pwned-passwords+common-passwords")
    # ... and --no-common-list applies N strictly to the counted data
    with CredentialChecker(pwned=sorted_file, min_count=200_000, use_common_list=False) as checker:
        assert checker.check("a") == CheckResult(False, 100_000, "pwned-passwords")


def test_test_hook():
    checker = CredentialChecker(use_common_list=False)
    assert checker.check("RISKGATE-TEST-anything at all") == CheckResult(True, None, "test-hook")
    assert not checker.check("riskgate-test-lowercase").compromised
    assert not checker.check("xRISKGATE-TEST-").compromised
    assert not CredentialChecker(test_hook=False, use_common_list=False).check("RISKGATE-TEST-x").compromised


def test_check_sha1(sorted_file):
    with CredentialChecker(pwned=sorted_file) as checker:
        assert checker.check_sha1(sha1("hunter2").lower()) == CheckResult(True, 17_043, "pwned-passwords")
        assert checker.check_sha1(sha1("password")) == CheckResult(True, None, "common-passwords")
        with pytest.raises(InputFormatError, match="40 hexadecimal"):
            checker.check_sha1("abc")


def test_from_env(sorted_file, monkeypatch):
    monkeypatch.setenv(cred.PWNED_PATH_ENV, str(sorted_file))
    monkeypatch.setenv(cred.MIN_COUNT_ENV, "6")
    checker = CredentialChecker.from_env()
    assert checker.check("correct horse battery staple") == CheckResult(False, 5, "pwned-passwords")
    assert CredentialChecker.from_env(min_count=5).check("correct horse battery staple").compromised
    monkeypatch.setenv(cred.MIN_COUNT_ENV, "many")
    with pytest.raises(ConfigurationError, match="RISKGATE_PWNED_MIN_COUNT"):
        CredentialChecker.from_env()


# -- EventFilter / EventAction -------------------------------------------------------------------------------

HIT = CheckResult(True, 12, "pwned-passwords")
MISS = CheckResult(False, 0, "pwned-passwords")


@pytest.mark.parametrize(
    "event_type, event_filter, action, result, applies, detected, block",
    [
        ("SignIn", None, "BLOCK", HIT, True, True, True),
        ("SignIn", None, "NO_ACTION", HIT, True, True, False),
        ("SignIn", None, "BLOCK", MISS, True, False, False),
        ("SignUp", ["SIGN_UP"], "BLOCK", HIT, True, True, True),
        ("SignIn", ["SIGN_UP", "PASSWORD_CHANGE"], "BLOCK", HIT, False, False, False),
        ("PasswordChange", ["PASSWORD_CHANGE"], "BLOCK", HIT, True, True, True),
        ("PasswordChange", [], "NO_ACTION", HIT, True, True, False),
        ("ForgotPassword", None, "BLOCK", HIT, False, False, False),
        ("ResendCode", None, "BLOCK", None, False, False, False),
        ("SignIn", "SIGN_IN", "BLOCK", HIT, True, True, True),
    ],
)
def test_evaluate(event_type, event_filter, action, result, applies, detected, block):
    out = cred.evaluate(event_type, event_filter, action, result)
    assert (out.applies, out.detected, out.block, out.reset_required) == (applies, detected, block, block)
    assert out.event_action == action


def test_evaluate_names_bad_settings():
    with pytest.raises(ConfigurationError, match="EventFilter: 'SIGNIN'"):
        cred.evaluate("SignIn", ["SIGNIN"], "BLOCK", HIT)
    with pytest.raises(ConfigurationError, match="EventAction: 'MFA_REQUIRED'"):
        cred.evaluate("SignIn", None, "MFA_REQUIRED", HIT)
    with pytest.raises(ConfigurationError, match="event type 'Login'"):
        cred.applies("Login", None)


# -- the store: BLOCK, recorded outcomes, nothing secret -----------------------------------------------------------


def add_user(con, username, status="CONFIRMED"):
    con.execute("INSERT INTO users (username, user_status, email, pool_key) VALUES (?, ?, ?, '')",
                [username, status, f"{username}@example.com"])


def status_of(con, username):
    rows = con.execute("SELECT user_status FROM users WHERE username = ?", [username]).fetchall()
    return rows[0][0] if rows else None


def test_apply_block_sets_reset_required(tmp_path):
    con = connect(tmp_path / "s.duckdb")
    add_user(con, "alice")
    assert cred.apply_block(con, "alice") == "CONFIRMED"
    assert status_of(con, "alice") == "RESET_REQUIRED"
    assert con.execute("SELECT email FROM users WHERE username = 'alice'").fetchall() == [("alice@example.com",)]
    assert cred.apply_block(con, "bob") is None  # unknown until now: a row is made
    assert status_of(con, "bob") == "RESET_REQUIRED"


def test_check_event_enforced_audit_and_filtered(tmp_path):
    con = connect(tmp_path / "s.duckdb")
    for u in ("alice", "bob", "carol"):
        add_user(con, u)
    checker = CredentialChecker()
    out = cred.check_event(con, checker, event_type="SignIn", password="password", event_action="BLOCK",
                           username="alice", event_id="e1")
    assert out.block and status_of(con, "alice") == "RESET_REQUIRED"
    out = cred.check_event(con, checker, event_type="SignIn", password="password", event_action="BLOCK",
                           username="bob", event_id="e2", enforce=False)
    assert out.block and status_of(con, "bob") == "CONFIRMED"  # AUDIT: recorded, not applied
    out = cred.check_event(con, checker, event_type="SignIn", password="password", event_action="BLOCK",
                           event_filter=["SIGN_UP"], username="carol", event_id="e3")
    assert not out.applies and status_of(con, "carol") == "CONFIRMED"
    rows = {r["event_id"]: r for e in ("e1", "e2", "e3") for r in cred.checks_for_event(con, e)}
    assert (rows["e1"]["compromised"], rows["e1"]["blocked"], rows["e1"]["source"]) == (True, True, "common-passwords")
    assert (rows["e2"]["compromised"], rows["e2"]["blocked"], rows["e2"]["enforced"]) == (True, False, False)
    assert (rows["e3"]["applies"], rows["e3"]["compromised"], rows["e3"]["source"]) == (False, False, None)


def test_the_password_is_never_logged_stored_or_shown(tmp_path, sorted_file, caplog):
    secret = "correct horse battery staple"
    db = tmp_path / "store" / "s.duckdb"
    db.parent.mkdir()
    con = connect(db)
    add_user(con, "alice")
    caplog.set_level(logging.DEBUG)
    with CredentialChecker(pwned=sorted_file) as checker:
        result = checker.check(secret)
        out = cred.check_event(con, checker, event_type="SignIn", password=secret, event_action="BLOCK",
                               username="alice", event_id="e1")
    assert result.compromised and out.block
    con.close()
    shown = [repr(result), str(result), result.describe(), json.dumps(result.as_json()), repr(out),
             json.dumps(out.as_json())]
    shown += [r.getMessage() for r in caplog.records] + [caplog.text]
    for text in shown:
        assert secret not in text and sha1(secret) not in text.upper()
    stored = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.is_file())
    assert b"e1" in stored and b"RESET_REQUIRED" in stored  # the outcome is there ...
    for needle in (secret.encode(), sha1(secret).encode(), sha1(secret).lower().encode(),
                   hashlib.sha1(secret.encode()).digest()):
        assert needle not in stored  # ... the password and its hash are not


# -- the CLI ----------------------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_check_reads_stdin_only(sorted_file):
    res = runner.invoke(app, ["credentials", "check", "--pwned", str(sorted_file)], input="hunter2\n")
    assert res.exit_code == 0, res.output
    assert res.output.strip() == "compromised: seen 17043 times in pwned-passwords"
    res = runner.invoke(app, ["credentials", "check", "--pwned", str(sorted_file)], input=UNKNOWN + "\r\n")
    assert res.exit_code == 1 and res.output.strip() == "not found in breach data"
    res = runner.invoke(app, ["credentials", "check", "--pwned", str(sorted_file), "--json", "--min-count", "10"],
                        input="correct horse battery staple")
    assert res.exit_code == 1
    assert json.loads(res.output) == {"compromised": False, "count": 5, "source": "pwned-passwords", "min_count": 10}
    res = runner.invoke(app, ["credentials", "check"], input="ünïcödé-pässwörd\n",
                        env={cred.PWNED_PATH_ENV: str(sorted_file)})
    assert res.exit_code == 0 and "seen 3 times" in res.output
    res = runner.invoke(app, ["credentials", "check", "hunter2"], input="x\n")
    assert res.exit_code == 2  # there is no password argument
    res = runner.invoke(app, ["credentials", "check"], input="")
    assert res.exit_code == 2 and "no password on standard input" in res.output


def test_cli_build_and_verify(sorted_file, tmp_path):
    out = tmp_path / "idx.rgpw"
    res = runner.invoke(app, ["credentials", "build", str(sorted_file), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"{sorted_file}:151: expected HASH:COUNT" in res.output
    assert f"wrote {out}" in res.output
    res = runner.invoke(app, ["credentials", "check", "--pwned", str(out)], input="zebra-umbrella-41\n")
    assert res.exit_code == 0 and "seen 250 times" in res.output
    res = runner.invoke(app, ["credentials", "verify", str(sorted_file), "--json"])
    assert res.exit_code == 1
    report = json.loads(res.output)
    assert report["issue_count"] == 1 and report["issues"][0]["line"] == 151
    res = runner.invoke(app, ["credentials", "build", str(tmp_path / "missing.txt")])
    assert res.exit_code == 2 and "no such file" in res.output


def test_cli_asks_without_echo_on_a_terminal(monkeypatch):
    from cli import credentials_cmd

    class Terminal:
        def isatty(self):
            return True

        def readline(self):  # pragma: no cover - a terminal is read through getpass only
            raise AssertionError("read the terminal without getpass")

    asked = []
    monkeypatch.setattr(credentials_cmd.sys, "stdin", Terminal())
    monkeypatch.setattr(credentials_cmd.getpass, "getpass", lambda prompt: asked.append(prompt) or "hunter2")
    assert credentials_cmd.read_password() == "hunter2"
    assert asked == ["Password: "]
