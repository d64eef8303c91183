"""Persistent job records (SQLite): a coordinator restart loses no job, and a
job that was in flight is marked failed, never left running forever."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Optional

TERMINAL = ("succeeded", "failed", "cancelled")


AUDIT_MAX_ROWS = 100_000       # the audit table keeps this many newest rows by default


class Store:
    def __init__(self, path: str, audit_max_rows: int = AUDIT_MAX_ROWS):
        if audit_max_rows < 1:
            raise ValueError(f"audit_max_rows must be at least 1, not {audit_max_rows}")
        self.audit_max_rows = audit_max_rows
        if path != ":memory:":
            # owner-only: job specs, audit and (for analyst receivers) results live here;
            # SQLite gives its -wal/-shm files the database file's mode
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript("""
                PRAGMA journal_mode=WAL;
                CREATE TABLE IF NOT EXISTS jobs (
                    id TEXT PRIMARY KEY, name TEXT, spec_yaml TEXT, spec BLOB,
                    submitter TEXT, parties TEXT, state TEXT, reason TEXT,
                    created REAL, updated REAL, iterations INTEGER DEFAULT 0, result BLOB,
                    seed INTEGER);
                CREATE TABLE IF NOT EXISTS events (job_id TEXT, time REAL, body TEXT);
                CREATE TABLE IF NOT EXISTS audit (time REAL, identity TEXT, action TEXT,
                                                  job_id TEXT, outcome TEXT);
            """)

    def recover(self) -> list:
        """Jobs in flight when the coordinator stopped: mark them failed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, state FROM jobs WHERE state NOT IN (?, ?, ?)", TERMINAL).fetchall()
            for jid, state in rows:
                self._db.execute("UPDATE jobs SET state='failed', reason=?, updated=? WHERE id=?",
                                 (f"coordinator restarted while the job was {state}",
                                  time.time(), jid))
        return [r[0] for r in rows]

    def create(self, jid: str, name: str, spec_yaml: str, spec: bytes, submitter: str,
               parties: list) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO jobs (id, name, spec_yaml, spec, submitter, parties, "
                             "state, reason, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (jid, name, spec_yaml, spec, submitter, json.dumps(parties),
                              "agreeing", "", now, now))

    def update(self, jid: str, **fields) -> None:
        fields["updated"] = time.time()
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), jid))

    def get(self, jid: str) -> Optional[dict]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM jobs WHERE id=?", (jid,))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        return dict(zip(names, row)) if row else None

    def list(self, limit: int = 50) -> list:
        with self._lock:
            cur = self._db.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def add_event(self, jid: str, body: dict) -> None:
        with self._lock:
            self._db.execute("INSERT INTO events VALUES (?,?,?)",
                             (jid, time.time(), json.dumps(body)))

    def events(self, jid: str) -> list:
        with self._lock:
            return [json.loads(b) for (b,) in self._db.execute(
                "SELECT body FROM events WHERE job_id=? ORDER BY rowid", (jid,))]

    def audit(self, identity: str, action: str, job_id: str, outcome: str) -> None:
        """Append a row; rows older than the newest audit_max_rows are dropped. The
        table only grows at its end and loses rows only at its start, so its rowids
        are consecutive: the cut is one range delete on the rowid (no scan)."""
        with self._lock:
            cur = self._db.execute("INSERT INTO audit VALUES (?,?,?,?,?)",
                                   (time.time(), identity, action, job_id, outcome))
            self._db.execute("DELETE FROM audit WHERE rowid <= ?",
                             (cur.lastrowid - self.audit_max_rows,))

    def audit_log(self) -> list:
        with self._lock:
            return self._db.execute("SELECT time, identity, action, job_id, outcome FROM audit "
                                    "ORDER BY rowid").fetchall()

    def audit_tail(self, limit: int, job_id: str = "") -> list:
        """The newest ``limit`` audit rows (of one job if given), oldest first."""
        q = "SELECT time, identity, action, job_id, outcome FROM audit"
        args: tuple = ()
        if job_id:
            q, args = q + " WHERE job_id=?", (job_id,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY rowid DESC LIMIT ?", (*args, limit)).fetchall()
        return rows[::-1]
