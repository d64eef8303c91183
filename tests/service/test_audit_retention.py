"""The audit table is bounded: it keeps the newest --audit-max-rows rows."""

import subprocess
import sys

import pytest

from coordinator.store import Store
from testkit import ROOT, free_port

pytestmark = pytest.mark.timeout(60)


def fill(store: Store, first: int, last: int) -> None:
    for i in range(first, last):
        store.audit("analyst:ann", "submit", f"job{i}", "ok")


def jobs(store: Store) -> list:
    return [row[3] for row in store.audit_log()]


def test_store_keeps_only_the_newest_rows(tmp_path):
    db = str(tmp_path / "c.db")
    s = Store(db, audit_max_rows=5)
    fill(s, 0, 3)
    assert jobs(s) == ["job0", "job1", "job2"]        # below the limit: nothing dropped
    fill(s, 3, 12)
    assert jobs(s) == [f"job{i}" for i in range(7, 12)]
    # another store on the same file (a restart) goes on from there
    s2 = Store(db, audit_max_rows=5)
    assert jobs(s2) == [f"job{i}" for i in range(7, 12)]     # opening it deletes nothing
    fill(s2, 12, 14)
    assert jobs(s2) == [f"job{i}" for i in range(9, 14)]


def test_a_smaller_limit_after_a_restart_applies_at_the_next_row(tmp_path):
    db = str(tmp_path / "c.db")
    fill(Store(db, audit_max_rows=10), 0, 10)
    s = Store(db, audit_max_rows=3)
    fill(s, 10, 11)
    assert jobs(s) == ["job8", "job9", "job10"]


def test_the_default_limit_and_a_bad_one(tmp_path):
    assert Store(":memory:").audit_max_rows == 100_000
    with pytest.raises(ValueError, match="audit_max_rows"):
        Store(":memory:", audit_max_rows=0)
    res = subprocess.run([sys.executable, "-m", "meanshift_cli", "coordinator", "serve",
                          "--listen", f"127.0.0.1:{free_port()}", "--db", str(tmp_path / "x.db"),
                          "--insecure", "--audit-max-rows", "0"],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert res.returncode == 2 and "audit_max_rows" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
