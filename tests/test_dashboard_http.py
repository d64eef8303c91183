"""The dashboard's HTTP surface and collector without a coordinator (a fake
client): token, local Host only, security headers, one coordinator read per
refresh interval, progress from the watch stream, the audit note for a
non-operator, result errors passed on (fast; the browser test against a real
federation is tests/service/test_dashboard.py)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import pytest

from meanshift_cli.dashboard import start


class _Denied(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.PERMISSION_DENIED

    def details(self):
        return "analyst:ann may not read the audit log (operators only)"


class FakeClient:
    identity = "analyst:ann"

    def __init__(self):
        self.reads = 0

    def parties(self):
        self.reads += 1
        return [{"id": "alpha", "connected": True, "last_seen": time.time()},
                {"id": "dealer:dd", "connected": False, "last_seen": 0}]

    def list(self, limit):
        return [{"job_id": "a" * 24, "state": "running", "submitter": "analyst:ann",
                 "parties": ["alpha"], "spec_yaml": "name: j\nmax_iter: 9\nreveal_to: "
                 "['analyst:ann']\ndealer: dd\n"},
                {"job_id": "b" * 24, "state": "failed", "reason": "party beta disconnected",
                 "parties": ["alpha", "beta"], "spec_yaml": "{{not yaml"}]

    def audit(self, limit):
        raise _Denied()

    def watch(self, job_id):
        yield {"stage": "iteration", "state": "running", "iteration": 3, "max_iter": 9}

    def result_table(self, job_id):
        raise _Denied()


@pytest.fixture
def dash():
    client = FakeClient()
    httpd, url = start(client, port=0, refresh_s=30.0)
    yield client, url
    httpd.shutdown()


def _get(url, **headers):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
        return r.status, dict(r.headers), r.read()


def test_token_and_host_required(dash):
    _, url = dash
    base, token = url.split("/?token=")
    for path in ("/", "/api/state", "/api/result?job=x"):
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(base + path)
        assert e.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(url, Host=f"attacker.example:{base.rsplit(':', 1)[1]}")
    assert e.value.code == 403
    status, headers, body = _get(url)
    assert status == 200 and b"secure-meanshift federation" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
    _, _, js = _get(base + "/app.js")                 # static code needs no token
    assert b"innerHTML" not in js                     # values are set as text only


def test_state_reads_the_coordinator_once_per_interval(dash):
    client, url = dash
    base, token = url.split("/?token=")
    for _ in range(3):
        _, _, body = _get(base + "/api/state", **{"X-Dashboard-Token": token})
    assert client.reads == 1
    state = json.loads(body)
    jobs = {j["job_id"][0]: j for j in state["jobs"]}
    assert jobs["a"]["receiver"] and jobs["a"]["dealer"] == "dd" and jobs["a"]["max_iter"] == 9
    assert jobs["b"]["reason"] == "party beta disconnected" and jobs["b"]["name"] == ""
    assert [p["kind"] for p in state["parties"]] == ["party", "dealer"]
    assert state["audit"] is None and "operators only" in state["audit_note"]
    deadline = time.time() + 5
    while time.time() < deadline:      # the watch thread keeps the latest progress
        _, _, body = _get(base + "/api/state", **{"X-Dashboard-Token": token})
        prog = {j["job_id"][0]: j["progress"] for j in json.loads(body)["jobs"]}
        if prog["a"]:
            break
        time.sleep(0.05)
    assert prog["a"]["iteration"] == 3 and prog["a"]["max_iter"] == 9 and prog["b"] is None


def test_result_error_is_shown_not_raised(dash):
    _, url = dash
    base, token = url.split("/?token=")
    _, _, body = _get(base + "/api/result?job=" + "a" * 24, **{"X-Dashboard-Token": token})
    assert json.loads(body) == {"error": "PERMISSION_DENIED: analyst:ann may not read the "
                                         "audit log (operators only)"}
