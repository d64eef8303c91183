"""Persistent job records (SQLite): a coordinator restart loses no job. A job
that was in flight (agreeing or running) is marked failed with RESTART_REASON,
never left running forever; a queued job keeps its place and starts later."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Optional

TERMINAL = ("succeeded", "failed", "cancelled")
RESTART_REASON = ("coordinator restarted while the job was {state}: its workers were "
                  "stopped; submit it again")
# columns added since the first schema (an older database gains them on open)
ADDED_COLUMNS = {"signed_spec": "BLOB", "signature": "BLOB", "signer_cert": "BLOB"}


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
            have = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
            for col, kind in ADDED_COLUMNS.items():
                if col not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {col} {kind}")

    def recover(self) -> list:
        """Jobs in flight (not queued) when the coordinator stopped: mark them failed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, state FROM jobs WHERE state NOT IN (?, ?, ?, 'queued')",
                TERMINAL).fetchall()
            for jid, state in rows:
                self._db.execute("UPDATE jobs SET state='failed', reason=?, updated=? WHERE id=?",
                                 (RESTART_REASON.format(state=state), time.time(), jid))
        return [r[0] for r in rows]

    def queued(self) -> list:
        """The queued jobs' rows, oldest first (the queue's order)."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM jobs WHERE state='queued' ORDER BY rowid")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def count(self, submitter: str, since: float = 0.0, state: Optional[str] = None) -> int:
        """Jobs of one submitter created since a time (in one state, if given)."""
        q, args = "SELECT COUNT(*) FROM jobs WHERE submitter=? AND created>=?", [submitter, since]
        if state:
            q, args = q + " AND state=?", args + [state]
        with self._lock:
            return self._db.execute(q, args).fetchone()[0]

    def create(self, jid: str, name: str, spec_yaml: str, spec: bytes, submitter: str,
               parties: list, signed: Optional[tuple] = None, state: str = "queued") -> None:
        """A new job row; ``signed``: (payload, signature, cert), kept so that a queued
        job can be offered after a restart."""
        now = time.time()
        payload, sig, cert = signed or (None, None, None)
        with self._lock:
            self._db.execute("INSERT INTO jobs (id, name, spec_yaml, spec, submitter, parties, "
                             "state, reason, created, updated, signed_spec, signature, "
                             "signer_cert) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             (jid, name, spec_yaml, spec, submitter, json.dumps(parties),
                              state, "", now, now, payload, sig, cert))

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
