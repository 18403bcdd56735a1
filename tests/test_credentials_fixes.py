"""risk/credentials.py: damaged, unsorted, empty, partial and duplicated Pwned Passwords data is refused or
reported rather than answered "not found"; the shipped list counts whatever --min-count is.

Every test writes small synthetic Pwned-Passwords-style data into tmp_path and checks known answers.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from ingest.errors import InputFormatError
from risk import credentials as cred
from risk.credentials import CheckResult, CredentialChecker

runner = CliRunner()

KNOWN = {"hunter2": 17_043, "zebra-umbrella-41": 250, "correct horse battery staple": 5}


def sha1(p: str) -> str:
    return hashlib.sha1(p.encode("utf-8")).hexdigest().upper()


def rows(n: int = 200) -> list[tuple[str, int]]:
    """Sorted (hash, count) rows: the KNOWN passwords, n fillers, and 40 hashes sharing prefix ABCD (one bucket)."""
    data = [(sha1(p), c) for p, c in KNOWN.items()]
    data += [(sha1(f"filler-{i}"), i % 97 + 1) for i in range(n)]
    data += [("ABCD" + hashlib.sha1(f"abcd-{i}".encode()).hexdigest().upper()[:36], i + 1) for i in range(40)]
    return sorted(data)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_bytes("".join(f"{line}\r\n" for line in lines).encode("ascii"))
    return path


def write_sorted(path: Path, data: list[tuple[str, int]]) -> Path:
    return write_lines(path, [f"{h}:{c}" for h, c in data])


def check_cli(*args: str, password: str = "hunter2"):
    return runner.invoke(app, ["credentials", "check", *args], input=password + "\n")


# -- 1. verify reads a built index; opening one checks its structure ---------------------------------------------


def built_index(tmp_path: Path) -> tuple[Path, list[tuple[str, int]]]:
    data = rows()
    out = tmp_path / "p.rgpw"
    cred.build(write_sorted(tmp_path / "p.txt", data), out)
    return out, data


def table_entry(b: int) -> int:
    return cred.HEADER_BYTES + 8 * b


def patch(path: Path, at: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[at : at + len(data)] = data
    path.write_bytes(bytes(raw))


ABCD = 0xABCD


def q(n: int) -> bytes:
    return struct.pack("<Q", n)


@pytest.mark.parametrize(
    "damage, on_open",
    [
        # a bucket's start above its end
        (lambda p, recs: patch(p, table_entry(ABCD), q(recs)), "bucket table is not rising"),
        # a bucket's start equal to its end while it holds records (the bucket before swallows them)
        (lambda p, recs: patch(p, table_entry(ABCD), p.read_bytes()[table_entry(ABCD + 1):table_entry(ABCD + 2)]),
         "does not match its checksum"),
        # the last end not the header's record count
        (lambda p, recs: patch(p, table_entry(cred.BUCKETS), q(recs - 1)), "not at the header's"),
        # ends beyond the file (and above the record count)
        (lambda p, recs: patch(p, table_entry(cred.BUCKETS - 1), q(recs + 1000)), "beyond the end of the file"),
    ],
    ids=["start-above-end", "start-equals-end", "last-end-not-count", "end-beyond-file"],
)
def test_a_damaged_bucket_table_is_refused_by_check_and_reported_by_verify(tmp_path, damage, on_open):
    out, data = built_index(tmp_path)
    damage(out, len(data))
    with pytest.raises(InputFormatError, match=on_open):
        cred.open_pwned(out)
    res = check_cli("--pwned", str(out), "--no-common-list")
    assert res.exit_code == 2 and "rebuild it" in res.output and "not found" not in res.output
    report = cred.verify(out)
    assert any(on_open in i.reason for i in report.issues), report.issues
    res = runner.invoke(app, ["credentials", "verify", str(out)])
    assert res.exit_code == 1 and on_open in res.output


def first_record_of(path: Path, bucket: int) -> int:
    return struct.unpack_from("<Q", path.read_bytes(), table_entry(bucket))[0]


def record_at(n: int) -> int:
    return cred.DATA_OFFSET + n * cred.RECORD_BYTES


def test_records_out_of_order_in_a_bucket_are_reported_by_verify(tmp_path):
    out, data = built_index(tmp_path)
    report = cred.verify(out)  # sound: no issue
    assert (report.layout, report.records, report.issue_count, report.issues) == ("index", len(data), 0, [])
    first = first_record_of(out, ABCD)
    raw = out.read_bytes()
    a, b = raw[record_at(first) : record_at(first + 1)], raw[record_at(first + 1) : record_at(first + 2)]
    patch(out, record_at(first), b + a)  # swap the bucket's first two records
    report = cred.verify(out)
    reasons = [i.reason for i in report.issues]
    assert f"record {first + 1:,} (bucket ABCD) is not above the record before it" in reasons[0]
    assert any("do not match their checksum" in r for r in reasons)
    assert runner.invoke(app, ["credentials", "verify", str(out)]).exit_code == 1


def test_random_bytes_over_records_are_reported_by_verify(tmp_path):
    out, data = built_index(tmp_path)
    first = first_record_of(out, ABCD)
    # bytes that keep the bucket sorted (a larger last record) still break the records' checksum
    last = first + 39
    patch(out, record_at(last), b"\xff" * cred.SUFFIX_BYTES)
    report = cred.verify(out)
    assert [i.reason for i in report.issues] == ["the records do not match their checksum: the records are damaged"]
    # and a zeroed count is named
    patch(out, record_at(first) + cred.SUFFIX_BYTES, bytes(4))
    reasons = [i.reason for i in cred.verify(out).issues]
    assert f"record {first:,} (bucket ABCD) has count 0" in reasons


# -- 2. check refuses a text file not sorted by hash ---------------------------------------------------------------


def test_check_refuses_a_file_ordered_by_count(tmp_path):
    data = rows()
    path = write_sorted(tmp_path / "pwned-passwords-sha1-ordered-by-count-v8.txt",
                        sorted(data, key=lambda r: (-r[1], r[0])))
    with pytest.raises(InputFormatError, match="not sorted by hash"):
        cred.open_pwned(path)
    res = check_cli("--pwned", str(path), "--no-common-list", password="zebra-umbrella-41")
    assert res.exit_code == 2
    assert "not sorted by hash" in res.output and "ordered by hash" in res.output
    assert "riskgate credentials build" in res.output
    # one damaged line in a sorted file does not make it look unsorted
    lines = [f"{h}:{c}" for h, c in data]
    lines[len(lines) // 2] = "F" * 40 + ":3"  # an isolated out-of-order line
    path = write_lines(tmp_path / "p.txt", lines)
    with CredentialChecker(pwned=path, use_common_list=False) as checker:
        assert checker.check("hunter2") == CheckResult(True, 17_043, "pwned-passwords")


# -- 3. one damaged line is reported alone; the lines after it are kept ------------------------------------------


@pytest.mark.parametrize("outlier", ["F" * 40, "8" * 40])  # lines above their place (one below was always fine)
def test_one_out_of_order_line_is_reported_alone(tmp_path, monkeypatch, outlier):
    monkeypatch.setattr(cred, "MAX_OUT_OF_ORDER", 5)
    data = rows()
    at = next(i for i in range(10, len(data)) if not (data[i - 1][0] < outlier < data[i + 1][0]))
    lines = [f"{h}:{c}" for h, c in data]
    damaged = data[at]
    lines[at] = f"{outlier}:3"
    path = write_lines(tmp_path / "p.txt", lines)
    report = cred.verify(path)
    assert report.issue_count == 1
    assert (report.issues[0].line, report.issues[0].text) == (at + 1, f"{outlier}:3")
    assert "out of hash order" in report.issues[0].reason
    built = cred.build(path, tmp_path / "p.rgpw")
    assert (built.issue_count, built.records) == (1, len(data) - 1)
    with cred.open_pwned(tmp_path / "p.rgpw") as idx:
        for h, c in data:
            assert idx.lookup(bytes.fromhex(h)) == (None if h == damaged[0] else c)
        assert idx.lookup(bytes.fromhex(outlier)) is None


def test_one_out_of_order_line_in_a_range_file_is_reported_alone(tmp_path):
    folder = tmp_path / "ranges"
    folder.mkdir()
    suffixes = sorted(hashlib.sha1(f"r-{i}".encode()).hexdigest().upper()[:35] for i in range(30))
    lines = [f"{s}:{i + 1}" for i, s in enumerate(suffixes)]
    lines[3] = "F" * 35 + ":9"
    write_lines(folder / "00000.txt", lines)
    report = cred.verify(folder)
    line_issues = [i for i in report.issues if i.line is not None]
    assert [(Path(i.source).name, i.line) for i in line_issues] == [("00000.txt", 4)]
    assert report.hashes == 29


# -- 4. no usable hash: no index; an empty index is refused ------------------------------------------------------


@pytest.mark.parametrize("name, text", [
    ("README.md", "# riskgate\n\nAn account-takeover risk engine.\n"),
    ("empty.txt", ""),
    ("00000.txt", "0005AD76BD555C1D6D771DE417A4B87E4B4:10\r\n00A8DAE4228F821FB418F59826079BF368:3\r\n"),
], ids=["readme", "empty", "single-range-file"])
def test_build_refuses_data_with_no_usable_hash(tmp_path, name, text):
    src = tmp_path / name
    src.write_text(text, newline="")
    out = tmp_path / "x.rgpw"
    with pytest.raises(InputFormatError, match="no usable SHA1:COUNT line"):
        cred.build(src, out)
    assert not out.exists() and not list(tmp_path.glob("x.rgpw.tmp*"))
    res = runner.invoke(app, ["credentials", "build", str(src), "--out", str(out)])
    assert res.exit_code == 2 and "no index written" in res.output and not out.exists()


def test_an_index_with_no_records_is_refused(tmp_path):
    empty = tmp_path / "empty.rgpw"  # what an earlier build wrote for data with no hashes
    header = struct.pack("<8sIIQQQ", cred.INDEX_MAGIC, cred.INDEX_VERSION, cred.KEY_BYTES, 0, 3, 3)
    empty.write_bytes(header.ljust(cred.HEADER_BYTES, b"\0") + bytes(cred.INDEX_BYTES))
    with pytest.raises(InputFormatError, match="holds no hashes"):
        cred.open_pwned(empty)
    res = check_cli("--pwned", str(empty), "--no-common-list")
    assert res.exit_code == 2 and "holds no hashes" in res.output
    assert runner.invoke(app, ["credentials", "verify", str(empty)]).exit_code == 1


# -- 5. an incomplete range folder is refused unless --allow-partial ----------------------------------------------


def range_folder(tmp_path: Path, prefixes: list[str]) -> Path:
    folder = tmp_path / "ranges"
    folder.mkdir()
    for p in prefixes:
        suffixes = sorted(hashlib.sha1(f"{p}-{i}".encode()).hexdigest().upper()[:35] for i in range(5))
        write_lines(folder / f"{p}.txt", [f"{s}:{i + 2}" for i, s in enumerate(suffixes)])
    return folder


def test_an_incomplete_range_folder_is_refused_unless_allowed(tmp_path):
    folder = range_folder(tmp_path, ["00000", "00001", "00003"])
    some = sorted(hashlib.sha1(f"00003-{i}".encode()).hexdigest().upper()[:35] for i in range(5))[0]
    digest = "00003" + some
    message = "1,048,573 of 1,048,576 range files missing (first missing: 00002.txt)"
    with pytest.raises(InputFormatError, match=r"1,048,573 of 1,048,576 range files missing \(first missing: 00002"):
        cred.open_pwned(folder)
    res = runner.invoke(app, ["credentials", "check", "--pwned", str(folder), "--no-common-list"], input="x\n")
    assert res.exit_code == 2 and message in res.output and "--allow-partial" in res.output
    warned = []
    with cred.open_pwned(folder, allow_partial=True, warn=warned.append) as lookup:
        assert lookup.lookup(bytes.fromhex(digest)) == 2
    assert len(warned) == 1 and message in warned[0]
    res = runner.invoke(app, ["credentials", "check", "--pwned", str(folder), "--allow-partial", "--no-common-list"],
                        input="x\n")
    assert res.exit_code == 1 and "warning:" in res.output and message in res.output

    out = tmp_path / "r.rgpw"
    with pytest.raises(InputFormatError, match="first missing: 00002.txt"):
        cred.build(folder, out)
    assert not out.exists()
    res = runner.invoke(app, ["credentials", "build", str(folder), "--out", str(out)])
    assert res.exit_code == 2 and message in res.output and not out.exists()
    res = runner.invoke(app, ["credentials", "build", str(folder), "--out", str(out), "--allow-partial"])
    assert res.exit_code == 0 and message in res.output
    with cred.open_pwned(out) as idx:
        assert idx.records == 15 and idx.lookup(bytes.fromhex(digest)) == 2
    # the incomplete folder is a problem of the whole, not an unusable line, nor a line its build skipped
    assert "0 unusable lines, 1 other problem" in res.output, res.output
    res = runner.invoke(app, ["credentials", "verify", str(out), "--json"])
    assert json.loads(res.stdout)["skipped_at_build"] == 0, res.output


def test_range_files_out_of_hash_order_are_named_as_range_files(tmp_path, monkeypatch):
    """1,200 range files each with its two lines in the wrong order: it said "FILE: 1000 lines out of hash order by
    line 2: this file is not sorted by hash (use ... a folder of range files)" of a folder of range files."""
    monkeypatch.setattr(cred, "MAX_OUT_OF_ORDER", 10)
    folder = tmp_path / "ranges"
    folder.mkdir()
    for k in range(20):
        write_lines(folder / f"{k:05X}.txt", ["F" * 35 + ":3", "0" * 35 + ":2"])
    with pytest.raises(InputFormatError) as e:
        cred.verify(folder)
    assert str(e.value).startswith(f"{folder}: 10 lines out of hash order in the range files read so far (the last: "
                                   "line 2 of 00009.txt): the range files are not sorted by hash"), str(e.value)


def test_a_complete_range_folder_needs_no_option(tmp_path, monkeypatch):
    monkeypatch.setattr(cred, "RANGE_FILES", 4)  # a "complete" folder of 4 range files
    folder = range_folder(tmp_path, ["00000", "00001", "00002", "00003"])
    warned = []
    with cred.open_pwned(folder, warn=warned.append) as lookup:
        assert lookup.complete
    assert warned == []
    assert cred.build(folder, tmp_path / "r.rgpw").records == 20
    (folder / "00001.txt").unlink()
    with pytest.raises(InputFormatError, match=r"1 of 4 range files missing \(first missing: 00001.txt\)"):
        cred.open_pwned(folder)


# -- 6. the shipped list counts whatever --min-count is ------------------------------------------------------------


def test_shipped_list_counts_even_when_pwned_data_has_the_password_below_min_count(tmp_path):
    path = write_sorted(tmp_path / "p.txt", sorted(rows() + [(sha1("password"), 3)]))
    with CredentialChecker(pwned=path, min_count=10) as checker:
        assert checker.check("password") == CheckResult(True, None, "common-passwords")
        assert checker.check("correct horse battery staple") == CheckResult(False, 5, "pwned-passwords")
    with CredentialChecker(pwned=path, min_count=10, use_common_list=False) as checker:
        assert checker.check("password") == CheckResult(False, 3, "pwned-passwords")
    res = check_cli("--pwned", str(path), "--min-count", "10", password="password")
    assert res.exit_code == 0 and res.output.strip() == "compromised: seen (count unknown) in common-passwords"
    res = check_cli("--pwned", str(path), "--min-count", "10", "--no-common-list", password="password")
    assert res.exit_code == 1 and "seen 3 times" in res.output


# -- 7. duplicates of a hash count as the largest count, everywhere -----------------------------------------------


def test_duplicates_count_as_the_largest_count_everywhere(tmp_path):
    data = rows()
    h, k = sha1("hunter2"), sha1("zebra-umbrella-41")
    lines = []
    for x, c in data:
        if x == h:
            lines += [f"{h}:0", f"{h}:50"]  # a count-0 line first must not hide the real count
        elif x == k:
            lines += [f"{k}:7", f"{k}:250", f"{k}:3"]
        else:
            lines.append(f"{x}:{c}")
    path = write_lines(tmp_path / "p.txt", lines)
    with CredentialChecker(pwned=path, use_common_list=False) as checker:
        assert checker.check("hunter2") == CheckResult(True, 50, "pwned-passwords")
        assert checker.check("zebra-umbrella-41") == CheckResult(True, 250, "pwned-passwords")
    report = cred.verify(path)
    h_line = lines.index(f"{h}:0") + 1
    k_line = lines.index(f"{k}:7") + 1
    assert [(i.line, i.reason) for i in report.issues] == sorted([
        (h_line + 1, f"duplicate of the hash on line {h_line}: the larger count is kept"),
        (k_line + 1, f"duplicate of the hash on line {k_line}: the larger count is kept"),
        (k_line + 2, f"duplicate of the hash on line {k_line}: the larger count is kept"),
    ])
    assert report.hashes == len(data)
    built = cred.build(path, tmp_path / "p.rgpw")
    assert built.records == len(data)
    with CredentialChecker(pwned=tmp_path / "p.rgpw", use_common_list=False) as checker:
        assert checker.check("hunter2") == CheckResult(True, 50, "pwned-passwords")
        assert checker.check("zebra-umbrella-41") == CheckResult(True, 250, "pwned-passwords")


def test_a_duplicate_after_a_count_0_line_alone_still_gives_a_record(tmp_path):
    h = sha1("hunter2")
    path = write_lines(tmp_path / "dup.txt", [f"{h}:0", f"{h}:50"])
    assert cred.build(path, tmp_path / "dup.rgpw").records == 1
    with cred.open_pwned(tmp_path / "dup.rgpw") as idx:
        assert idx.lookup(bytes.fromhex(h)) == 50


def test_duplicates_in_a_range_file_count_as_the_largest(tmp_path):
    folder = tmp_path / "ranges"
    folder.mkdir()
    h = sha1("hunter2")
    write_lines(folder / f"{h[:5]}.txt", ["0" * 35 + ":4", f"{h[5:]}:0", f"{h[5:]}:50", f"{h[5:]}:9"])
    with cred.open_pwned(folder, allow_partial=True) as lookup:
        assert lookup.lookup(bytes.fromhex(h)) == 50
    report = cred.build(folder, tmp_path / "r.rgpw", allow_partial=True)
    assert [i.line for i in report.issues if i.line is not None] == [3, 4]
    with cred.open_pwned(tmp_path / "r.rgpw") as idx:
        assert idx.lookup(bytes.fromhex(h)) == 50


# -- 9. --out naming an existing folder is refused before building ---------------------------------------------


def test_build_into_an_existing_folder_is_refused_before_reading(tmp_path, monkeypatch):
    src = write_sorted(tmp_path / "p.txt", rows())
    folder = tmp_path / "out"
    folder.mkdir()

    def no_reading(*a, **k):
        raise AssertionError("the input was read before the output path was checked")

    monkeypatch.setattr(cred, "scan", no_reading)
    with pytest.raises(InputFormatError, match="is a folder"):
        cred.build(src, folder)
    res = runner.invoke(app, ["credentials", "build", str(src), "--out", str(folder)])
    assert res.exit_code == 2 and "is a folder" in res.output and res.exception is not None
    assert isinstance(res.exception, SystemExit) and list(folder.iterdir()) == []


def test_cli_verify_json_of_an_index(tmp_path):
    out, data = built_index(tmp_path)
    patch(out, table_entry(cred.BUCKETS), q(len(data) + 1))
    res = runner.invoke(app, ["credentials", "verify", str(out), "--json"])
    assert res.exit_code == 1
    report = json.loads(res.output)
    assert report["layout"] == "index" and report["issue_count"] >= 1
    assert any("not at the header's" in i["reason"] for i in report["issues"])


# -- verify of an index: lines its build skipped are information; never more announced than listed ---------------


def _with_bad_lines(tmp_path: Path, bad: int) -> Path:
    """A sorted source of 5,000 hashes in which ``bad`` lines (every 5,000 // bad-th) are cut short."""
    lines = [f"{h}:{i + 1}" for i, h in enumerate(sorted(sha1(str(i)) for i in range(5000)))]
    step = 5000 // bad
    for k in range(0, step * bad, step):
        lines[k] = lines[k][:30]
    return write_lines(tmp_path / "few_bad.txt", lines)


def test_verify_of_an_intact_index_built_from_a_source_with_bad_lines_passes_and_says_so(tmp_path):
    """It exited 1 saying "25 unusable lines", listed none, and announced "... and 5 more (--json lists up to
    1,000)" while --json listed none. The 25 lines were skipped by the build: no defect of the index."""
    src = _with_bad_lines(tmp_path, 25)
    out = tmp_path / "few_bad.rgpw"
    assert runner.invoke(app, ["credentials", "build", str(src), "--out", str(out)]).exit_code == 0
    res = runner.invoke(app, ["credentials", "verify", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        f"verified {out} (index): 5,000 lines read, 4,975 hashes, 0 padding lines skipped, 0 problems",
        "  25 lines of its source were skipped when it was built (not a problem of the index; `riskgate "
        "credentials verify SOURCE` lists them)"]
    res = runner.invoke(app, ["credentials", "verify", str(out), "--json"])
    assert res.exit_code == 0
    report = json.loads(res.output)
    assert (report["issue_count"], report["issues"], report["skipped_at_build"]) == (0, [], 25)
    # the source's lines are listed by verifying the source: 20 shown, the other 5 by --json
    res = runner.invoke(app, ["credentials", "verify", str(src)])
    assert res.exit_code == 1
    assert sum(line.startswith(f"  {src}:") for line in res.output.splitlines()) == 20
    assert res.output.splitlines()[-1] == "  ... and 5 more (--json lists them)"
    report = json.loads(runner.invoke(app, ["credentials", "verify", str(src), "--json"]).output)
    assert (report["issue_count"], len(report["issues"]), report["skipped_at_build"]) == (25, 25, 0)


def test_verify_announces_only_as_many_more_issues_as_json_lists(tmp_path):
    src = _with_bad_lines(tmp_path, 1250)  # more than the 1,000 a report keeps
    res = runner.invoke(app, ["credentials", "verify", str(src)])
    assert res.exit_code == 1
    assert res.output.splitlines()[-1] == "  ... and 1,230 more (--json lists 980 of them)"
    report = json.loads(runner.invoke(app, ["credentials", "verify", str(src), "--json"]).output)
    assert (report["issue_count"], len(report["issues"])) == (1250, 1000)


# -- 6. build refuses data not sorted by hash, whatever its number of lines ---------------------------------------


def pw_rows(n: int) -> list[tuple[str, int]]:
    """The Pwned Passwords lines of pw0 .. pw{n-1}, each seen i + 1 times, in hash order."""
    return sorted((sha1(f"pw{i}"), i + 1) for i in range(n))


@pytest.mark.parametrize("name, order", [
    ("shuffled-900", lambda d: [d[(i * 7919) % len(d)] for i in range(len(d))]),  # 7919 is prime: a permutation
    ("reversed-5", lambda d: d[:5][::-1]),
    ("by-count-50", lambda d: sorted(d[:50], key=lambda r: -r[1])),
    ("reversed-2", lambda d: d[:2][::-1]),  # its last line was taken for a damaged line between lines in order
    ("last-two-swapped", lambda d: d[:58] + [d[59], d[58]]),
], ids=["shuffled-900", "reversed-5", "by-count-50", "reversed-2", "last-two-swapped"])
def test_build_refuses_a_file_not_sorted_by_hash_and_writes_no_index(tmp_path, name, order):
    """900 hashes in shuffled order built "7 hashes ... 893 unusable lines / wrote ...: 7 records", exit 0 (a 5-line
    reversed file likewise): it refused only at 1,000 lines out of order, and the index answered "not found" for the
    hashes it had skipped."""
    data = order(pw_rows(900))
    src = write_sorted(tmp_path / f"{name}.txt", data)
    out = tmp_path / "x.rgpw"
    with pytest.raises(InputFormatError, match=r"is out of hash order, and not as one damaged line between lines in "
                                               r"order: this file is not sorted by hash .*; no index written$"):
        cred.build(src, out)
    assert not out.exists() and not list(tmp_path.glob("x.rgpw.tmp*"))
    res = runner.invoke(app, ["credentials", "build", str(src), "--out", str(out)])
    assert res.exit_code == 2 and "this file is not sorted by hash" in res.output and not out.exists()
    # the same hashes in hash order are built whole, and every one is found
    res = runner.invoke(app, ["credentials", "build", str(write_sorted(tmp_path / "ok.txt", sorted(data))),
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    with cred.open_pwned(out) as idx:
        assert idx.records == len(data)
        assert [idx.lookup(bytes.fromhex(h)) for h, _ in data] == [c for _, c in data]


def test_reversed_five_line_file_names_its_first_line(tmp_path):
    src = write_sorted(tmp_path / "rev.txt", pw_rows(5)[::-1])
    with pytest.raises(InputFormatError) as e:
        cred.build(src, tmp_path / "x.rgpw")
    assert str(e.value) == (f"{src}: line 1 is out of hash order, and not as one damaged line between lines in order: "
                            "this file is not sorted by hash (use the 'ordered by hash' download or a folder of range "
                            "files); no index written")
    # verify still lists each line it cannot use (and exits 1)
    report = cred.verify(src)
    assert report.hashes + report.unusable_lines == 5 and report.unusable_lines >= 3


def test_build_still_takes_what_the_readme_accepts(tmp_path):
    """Duplicates (largest count), CRLF, lowercase hex, count-0 padding and one isolated damaged line are kept
    apart from the damaged line, which is reported and skipped."""
    data = pw_rows(60)
    lines = [f"{h.lower() if i % 2 else h}:{c}" for i, (h, c) in enumerate(data)]
    lines.insert(10, f"{data[9][0]}:1000")  # a duplicate of line 10 with a larger count
    lines.insert(21, f"{data[19][0]}:0")  # a count-0 padding line of a real hash: its count is kept
    lines.insert(40, "F" * 40 + ":3")  # one damaged line, isolated
    src = write_lines(tmp_path / "p.txt", lines)
    report = cred.build(src, tmp_path / "p.rgpw")
    assert (report.lines_read, report.records, report.merged, report.unusable_lines) == (63, 60, 2, 3)
    assert [(i.line, i.reason.split(":")[0]) for i in report.issues] == [
        (11, "duplicate of the hash on line 10"), (22, "duplicate of the hash on line 21"),
        (41, "out of hash order while the lines around it are in order")]
    with cred.open_pwned(tmp_path / "p.rgpw") as idx:
        assert [idx.lookup(bytes.fromhex(h)) for h, _ in data] == [1000 if i == 9 else c for i, (h, c) in
                                                                   enumerate(data)]
        assert idx.lookup(bytes.fromhex("F" * 40)) is None


def test_build_refuses_range_files_not_sorted_by_hash_even_partial(tmp_path):
    folder = range_folder(tmp_path, ["00000", "00001", "00002"])
    lines = (folder / "00001.txt").read_text().split()
    write_lines(folder / "00001.txt", lines[::-1])
    with pytest.raises(InputFormatError) as e:
        cred.build(folder, tmp_path / "r.rgpw", allow_partial=True)
    assert str(e.value) == (f"{folder}: line 1 of 00001.txt is out of hash order, and not as one damaged line "
                            "between lines in order: the range files are not sorted by hash (download them again); "
                            "no index written")
    assert not (tmp_path / "r.rgpw").exists()
    write_lines(folder / "00001.txt", lines)
    assert cred.build(folder, tmp_path / "r.rgpw", allow_partial=True).records == 15


# -- check refuses any text file it could not answer for: every line of a short one, the head of a long one ---------


#: the six most common passwords of a breach, largest count first: the "ordered by count" download in small
TOP_SIX = {"123456": 37_359_195, "password": 9_545_824, "123456789": 15_108_458, "qwerty": 3_946_737,
           "12345678": 2_938_756, "iloveyou": 1_645_337}


def test_check_refuses_a_short_file_ordered_by_count_for_every_password_in_it(tmp_path):
    """Six lines, largest count first: `check` sampled their order, found the samples in order, and answered "not
    found in breach data" (exit 1) for five passwords that are in the file; `build` refused the same file."""
    src = write_sorted(tmp_path / "top.txt", sorted(((sha1(p), c) for p, c in TOP_SIX.items()), key=lambda r: -r[1]))
    for password in TOP_SIX:
        res = check_cli("--pwned", str(src), "--no-common-list", password=password)
        assert res.exit_code == 2, (password, res.output)
        assert "top.txt: line 2 is out of hash order" in res.stderr and "cannot be searched" in res.stderr
        assert res.stderr.count("\n") == 1
    res = runner.invoke(app, ["credentials", "build", str(src), "--out", str(tmp_path / "x.rgpw")])
    assert res.exit_code == 2 and "not sorted by hash" in res.output


@pytest.mark.parametrize("name, order", [
    ("shuffled-900", lambda d: [d[(i * 7919) % len(d)] for i in range(len(d))]),
    ("reversed-5", lambda d: d[:5][::-1]),
    ("by-count-50", lambda d: sorted(d[:50], key=lambda r: -r[1])),
    ("reversed-2", lambda d: d[:2][::-1]),
    ("last-two-swapped", lambda d: d[:58] + [d[59], d[58]]),
    ("pairs-swapped", lambda d: [d[i ^ 1] for i in range(len(d))]),
], ids=["shuffled-900", "reversed-5", "by-count-50", "reversed-2", "last-two-swapped", "pairs-swapped"])
def test_check_refuses_what_build_refuses_however_short_the_file(tmp_path, name, order):
    src = write_sorted(tmp_path / f"{name}.txt", order(pw_rows(900)))
    with pytest.raises(InputFormatError, match="is out of hash order, and not as one damaged line between lines in "
                                               "order: this file is not sorted by hash"):
        cred.open_pwned(src)
    with pytest.raises(InputFormatError, match="not sorted by hash"):
        cred.build(src, tmp_path / "x.rgpw")


def _hibp_like(n: int) -> list[tuple[str, int]]:
    """n hashes of a long-tailed breach, ordered by count as the download is (a count's hashes in hash order)."""
    return sorted(((sha1(f"pw{i}"), max(1, 5_000_000 // (i + 1) ** 2)) for i in range(n)), key=lambda r: (-r[1], r[0]))


@pytest.mark.parametrize("shape", ["hibp-like", "pairs-swapped"])
def test_check_refuses_a_long_file_ordered_by_count_from_its_head(tmp_path, shape):
    """Longer than the head checked line by line: its most common passwords, in no hash order, come first. Lines
    swapped two by two (ordered by count, counts falling, hashes nearly in order) passed every sample of the old
    check (three lines at a time, their middle compared) anywhere in the file."""
    n = 40_000
    if shape == "hibp-like":
        data = _hibp_like(n)
    else:
        by_hash = [h for h, _ in pw_rows(n)]
        data = [(by_hash[i ^ 1], n - i) for i in range(n)]
    src = write_sorted(tmp_path / f"{shape}.txt", data)
    assert src.stat().st_size > cred.PwnedSortedFile.ORDER_HEAD_BYTES
    with pytest.raises(InputFormatError, match="line [12] is out of hash order.*cannot be searched"):
        cred.open_pwned(src)


def test_check_still_searches_a_sorted_file_with_one_damaged_line_in_its_head_or_past_it(tmp_path):
    data = pw_rows(40_000)
    lines = [f"{h}:{c}" for h, c in data]
    lines[100] = "F" * 40 + ":3"  # isolated out-of-order lines, reported by verify and skipped by build
    lines[30_000] = "0" * 40 + ":3"
    lines[20_000] = "not a line"
    src = write_lines(tmp_path / "p.txt", lines)
    assert src.stat().st_size > cred.PwnedSortedFile.ORDER_HEAD_BYTES
    with cred.open_pwned(src) as lookup:  # opened: not refused
        assert [lookup.lookup(bytes.fromhex(data[i][0])) for i in (0, 20_001, 39_999)] == \
            [data[i][1] for i in (0, 20_001, 39_999)]
