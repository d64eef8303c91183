"""`secure-meanshift dashboard` in a real headless browser (Debian's Chromium,
driven by selenium through Debian's chromedriver) against a real federation:
the page loads, shows parties and the dealer online, a running job's progress,
a failed job's blame, the audit log for an operator (not for an analyst), and a
receiver's centroids as a plot. Also the HTTP surface: token, local Host only.

Set SMS_DASHBOARD_SCREENSHOT=path to keep a screenshot (docs/dashboard.png is
made this way: scripts/dashboard-screenshot.sh).."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from cluster import DEALER_KEY, Cluster
from testkit import ROOT

# about 100 s (a real federation runs a job first): slow, run by .ci/run on its own
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)


def _dashboard(cl: Cluster, identity: str, tmp) -> tuple[subprocess.Popen, str]:
    """Start the CLI's dashboard as `identity`; returns the process and its URL."""
    log = open(os.path.join(tmp, f"dashboard-{identity.replace(':', '_')}.log"), "w")
    p = subprocess.Popen([sys.executable, "-m", "meanshift_cli", "dashboard", "--port", "0",
                          "--refresh", "1", "--coordinator", cl.address, "--tls-dir", cl.certs,
                          "--identity", identity, "--server-name", "localhost"],
                         stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    line = p.stdout.readline()
    m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line)
    assert m, f"no URL printed: {line!r}"
    return p, m.group(1)


def _wait_state(c, job_id: str, states: tuple, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = c.status(job_id)
        if info["state"] in states:
            return info
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} never reached {states}: {info}")


def _submit(c, spec: dict) -> str:
    return c.submit(yaml.safe_dump(spec))["job_id"]


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """alpha, beta and the dealer online (gamma never started): one job that
    succeeded for analyst:ann, one that failed naming gamma, one running."""
    tmp = str(tmp_path_factory.mktemp("dash"))
    cl = Cluster(tmp, parties=3)
    cl.start_coordinator()
    cl.wait_listening()
    for n in ("alpha", "beta"):
        cl.start_node(n)
    cl.start_dealer()
    cl.wait_connected(["alpha", "beta", DEALER_KEY])
    c = cl.client()
    try:
        ok = _submit(c, cl.spec(parties=["alpha", "beta"], name="blobs"))
        _wait_state(c, ok, ("succeeded", "failed"))
        failed = _submit(c, cl.spec(name="needs-gamma"))
        _wait_state(c, failed, ("failed",))
        running = _submit(c, cl.spec(parties=["alpha", "beta"], name="long", oblivious=True,
                                     max_iter=400))
        yield {"cluster": cl, "tmp": tmp, "ok": ok, "failed": failed, "running": running,
               "client": c}
    finally:
        c.close()
        cl.stop()


def test_http_surface_token_and_local_host(federation):
    cl = federation["cluster"]
    p, url = _dashboard(cl, "analyst:ann", federation["tmp"])
    try:
        base = url.split("?")[0]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "api/state", timeout=10)
        assert e.value.code == 403
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base, timeout=10)            # no token: no page
        assert e.value.code == 403
        req = urllib.request.Request(url.replace("/?", "/api/state?"),
                                     headers={"Host": "evil.example:80"})
        with pytest.raises(urllib.error.HTTPError) as e:          # DNS rebinding
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 403
        with urllib.request.urlopen(url.replace("/?", "/api/state?"), timeout=10) as r:
            state = json.load(r)
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        assert state["identity"] == "analyst:ann"
        assert {j["job_id"] for j in state["jobs"]} >= {federation["ok"], federation["failed"]}
        assert state["audit"] is None and "operators only" in state["audit_note"]
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_operator_reads_the_audit_log_analyst_does_not(federation):
    c = federation["cluster"].client("operator:olga")
    try:
        rows = c.audit(5000, job_id=federation["ok"])     # every row of that job
        assert rows and all(r["job_id"] == federation["ok"] for r in rows)
        assert any(r["action"] == "submit" and r["identity"] == "analyst:ann" for r in rows)
        assert len(c.audit(3)) == 3                        # the newest rows, any job
    finally:
        c.close()
    import grpc

    ann = federation["cluster"].client("analyst:ann")
    try:
        with pytest.raises(grpc.RpcError) as e:
            ann.audit(5)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        ann.close()


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("Chromium and chromedriver (Debian: chromium chromium-driver) not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1300"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def _row_text(drv, job_id: str) -> str:
    from selenium.webdriver.common.by import By

    return drv.find_element(By.CSS_SELECTOR, f'#jobs tr[data-job="{job_id}"]').text


def _until(check, timeout: float = 60.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            got = check()
            if got:
                return got
        except Exception as exc:   # element not there yet
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"condition not met ({last})")


def test_browser_shows_progress_blame_audit_and_plot(federation, browser):
    from selenium.webdriver.common.by import By

    cl, drv = federation["cluster"], browser
    c = federation["client"]
    _wait_state(c, federation["running"], ("running",), timeout=90)
    p, url = _dashboard(cl, "operator:olga", federation["tmp"])
    try:
        drv.get(url)
        _until(lambda: drv.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
        parties = drv.find_element(By.ID, "parties").text
        assert re.search(r"alpha\s+party\s+online", parties)
        assert re.search(r"dealer:dd\s+dealer\s+online", parties)
        # a running job's progress: a bar and "iteration i/400"
        _until(lambda: re.search(r"iteration \d+/400", _row_text(drv, federation["running"])))
        assert "running" in _row_text(drv, federation["running"])
        # a failed job's blame, in the blame column
        assert "party gamma is not connected" in _row_text(drv, federation["failed"])
        assert drv.find_element(
            By.CSS_SELECTOR, f'#jobs tr[data-job="{federation["failed"]}"] td.blame').text
        # the audit log (operator)
        _until(lambda: federation["ok"] in drv.find_element(By.ID, "audit").text)
        # an operator is no receiver: no plot button
        assert "not a receiver" in _row_text(drv, federation["ok"])
        _shot(drv, "operator")
    finally:
        p.terminate()
        p.wait(timeout=10)
    p, url = _dashboard(cl, "analyst:ann", federation["tmp"])
    try:
        drv.get(url)
        _until(lambda: drv.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
        assert "operators only" in drv.find_element(By.ID, "audit-note").text
        _until(lambda: re.search(r"iteration \d+/400", _row_text(drv, federation["running"])))
        drv.find_element(By.CSS_SELECTOR,
                         f'#jobs tr[data-job="{federation["ok"]}"] button').click()
        dots = _until(lambda: drv.find_elements(By.CSS_SELECTOR, "#centroid-plot circle"))
        want = len(c.result(federation["ok"]))
        assert len(dots) == want >= 1
        assert "centroid(s)" in drv.find_element(By.ID, "plot-note").text
        _shot(drv, "analyst")
    finally:
        p.terminate()
        p.wait(timeout=10)
        c.cancel(federation["running"])


def _shot(drv, who: str) -> None:
    """Save a screenshot when SMS_DASHBOARD_SCREENSHOT names a file (for the docs)."""
    path = os.environ.get("SMS_DASHBOARD_SCREENSHOT")
    if path:
        base, ext = os.path.splitext(path)
        drv.save_screenshot(path if who == "operator" else f"{base}-{who}{ext}")
