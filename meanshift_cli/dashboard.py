"""secure-meanshift dashboard: a read-only live view of a federation.

The CLI reads the coordinator over its usual mutual-TLS gRPC API with the
caller's own certificate (ListParties, ListJobs, WatchJob, ListAudit, GetResult)
and serves one page on 127.0.0.1 only, at a random free port by default, behind
a random token printed with the address. The page polls a JSON endpoint. It
shows only what that identity may read from the coordinator anyway: parties and
dealers with their last heartbeat, the jobs it may read with state, progress and
blame, the audit log (operators), and the centroids of a job it receives
(analyst receivers: the shares are opened here with the identity's key).

Every refresh reads the coordinator once (ListParties, ListJobs and, for an
operator, ListAudit): the coordinator audits each ListJobs call, so a refresh
interval of a few seconds adds one audit row per refresh.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlparse

import grpc
import yaml

log = logging.getLogger("dashboard")
TERMINAL = ("succeeded", "failed", "cancelled")
MAX_WATCHERS = 8          # the coordinator allows 16 open streams per identity
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard_static")


class Collector:
    """The federation as this identity sees it, refreshed from the coordinator at
    most every ``refresh_s`` seconds whatever the number of open pages."""

    def __init__(self, client, refresh_s: float = 5.0, jobs: int = 50, audit_rows: int = 200):
        self.client, self.refresh_s = client, refresh_s
        self.jobs_limit, self.audit_rows = jobs, audit_rows
        self._lock, self._result_lock = threading.Lock(), threading.Lock()
        self._snap: dict = {}
        self._at = 0.0
        self._progress: dict = {}       # job id -> latest progress event
        self._watching: set = set()
        self._results: dict = {}        # job id -> opened result (receivers only)

    def snapshot(self) -> dict:
        with self._lock:
            if time.time() - self._at >= self.refresh_s or not self._snap:
                self._snap, self._at = self._read(), time.time()
            snap = dict(self._snap)
        snap["jobs"] = [dict(j, progress=self._progress.get(j["job_id"]))
                        for j in snap.get("jobs", [])]
        return snap

    def _read(self) -> dict:
        snap = {"identity": self.client.identity, "time": time.time(), "error": "",
                "parties": [], "jobs": [], "audit": None, "audit_note": ""}
        try:
            snap["parties"] = [_party(p) for p in self.client.parties()]
            snap["jobs"] = [self._job(j) for j in self.client.list(self.jobs_limit)]
        except grpc.RpcError as exc:
            snap["error"] = _rpc_message(exc)
            return snap
        try:
            snap["audit"] = self.client.audit(self.audit_rows)
        except grpc.RpcError as exc:
            snap["audit_note"] = _rpc_message(exc)
        return snap

    def _job(self, j: dict) -> dict:
        spec = _spec(j.get("spec_yaml", ""))
        receivers = [str(r) for r in spec.get("reveal_to") or []]
        out = {"job_id": j["job_id"], "name": str(spec.get("name") or ""),
               "state": j["state"], "reason": j.get("reason", ""),
               "submitter": j.get("submitter", ""), "parties": j.get("parties", []),
               "dealer": str(spec.get("dealer") or ""), "created": j.get("created", 0),
               "updated": j.get("updated", 0), "iterations": j.get("iterations", 0),
               "max_iter": spec.get("max_iter"),
               "receiver": self.client.identity in receivers}
        if j["state"] not in TERMINAL:
            self._follow(j["job_id"])
        return out

    def _follow(self, job_id: str) -> None:
        """A thread keeping the job's latest progress event while it runs."""
        if job_id in self._watching or len(self._watching) >= MAX_WATCHERS:
            return
        self._watching.add(job_id)
        threading.Thread(target=self._watch, args=(job_id,), daemon=True).start()

    def _watch(self, job_id: str) -> None:
        try:
            for ev in self.client.watch(job_id):
                if ev.get("max_iter") or ev.get("stage") in ("end", "retry") or \
                        job_id not in self._progress:
                    self._progress[job_id] = {k: ev.get(k) for k in (
                        "stage", "state", "iteration", "max_iter", "moving", "seconds",
                        "message", "time")}
        except grpc.RpcError as exc:
            log.info("stopped following job %s: %s", job_id, _rpc_message(exc))
        finally:                          # followed again at the next read if still live
            self._watching.discard(job_id)

    def result(self, job_id: str) -> dict:
        """The job's centroids opened with this identity's key, or why not."""
        with self._result_lock:
            if job_id in self._results:
                return self._results[job_id]
            try:
                cents, columns = self.client.result_table(job_id)
            except grpc.RpcError as exc:
                return {"error": _rpc_message(exc)}
            except Exception as exc:      # ResultError: forged, plain, incomplete
                return {"error": f"result refused: {exc}"}
            out = {"job_id": job_id, "columns": list(columns),
                   "centroids": [[float(v) for v in row] for row in cents],
                   "suppressed": int(getattr(self.client, "suppressed", 0) or 0)}
            self._results[job_id] = out
            return out


def _spec(text: str) -> dict:
    try:
        d = yaml.safe_load(text or "")
    except yaml.YAMLError:
        return {}
    return d if isinstance(d, dict) else {}


def _party(p: dict) -> dict:
    pid = p.get("id", "")
    return {"id": pid, "kind": "dealer" if pid.startswith("dealer:") else "party",
            "connected": bool(p.get("connected")), "last_seen": p.get("last_seen", 0),
            "busy_job": p.get("busy_job", ""), "datasets": p.get("datasets", []),
            "problems": [d.get("problem") or d.get("name", "")
                         for d in p.get("dataset_status", []) if not d.get("available")]}


def _rpc_message(exc: grpc.RpcError) -> str:
    code = exc.code()
    name = code.name if code is not None else "UNKNOWN"
    return f"{name}: {exc.details() or ''}".strip()


# ---- HTTP -----------------------------------------------------------------------------

HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; "
                                      "style-src 'self'; connect-src 'self'; img-src 'self'",
           "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/app.js": ("app.js", "text/javascript; charset=utf-8"),
         "/style.css": ("style.css", "text/css; charset=utf-8")}


def make_handler(collector: Collector, token: str, refresh_s: float):
    """The request handler: static files, /api/state and /api/result?job=ID; the
    API needs the token (query or X-Dashboard-Token header) and a local Host."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "secure-meanshift-dashboard"
        sys_version = ""

        def log_message(self, fmt, *args):      # no URLs (they carry the token) in logs
            return

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            for k, v in HEADERS.items():
                self.send_header(k, v)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, data) -> None:
            self._send(code, json.dumps(data).encode(), "application/json")

        def _authorised(self, query: dict) -> bool:
            given = self.headers.get("X-Dashboard-Token") or (query.get("token") or [""])[0]
            return hmac.compare_digest(given.encode(), token.encode())

        def _local_host(self) -> bool:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            return host in ("127.0.0.1", "localhost", "[::1]")

        def do_GET(self):  # noqa: N802 (http.server's name)
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if not self._local_host():
                return self._send(403, b"forbidden: not a local host name\n", "text/plain")
            if url.path in FILES:
                if url.path == "/" and not self._authorised(query):
                    return self._send(403, b"open the address the dashboard command printed "
                                      b"(it carries the token)\n", "text/plain")
                name, ctype = FILES[url.path]
                with open(os.path.join(STATIC, name), "rb") as fh:
                    body = fh.read()
                if name == "index.html":
                    body = body.replace(b"{{REFRESH_MS}}", str(int(refresh_s * 1000)).encode())
                return self._send(200, body, ctype)
            if not self._authorised(query):
                return self._json(403, {"error": "missing or wrong token"})
            if url.path == "/api/state":
                return self._json(200, collector.snapshot())
            if url.path == "/api/result":
                job = (query.get("job") or [""])[0]
                return self._json(200, collector.result(job))
            return self._json(404, {"error": "not found"})

    return Handler


def start(client, port: int = 0, refresh_s: float = 5.0, token: Optional[str] = None,
          jobs: int = 50) -> tuple[ThreadingHTTPServer, str]:
    """Serve the dashboard on 127.0.0.1 in a background thread; returns the server
    and the URL to open (with its token)."""
    token = token or secrets.token_urlsafe(24)
    collector = Collector(client, refresh_s=refresh_s, jobs=jobs)
    httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(collector, token, refresh_s))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/?token={token}"
