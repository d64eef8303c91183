"""`secure-meanshift demo`, the README's main command: coordinator + 3 nodes as
processes, one job, centroids next to the twin and scikit-learn, a PNG, exit 0,
and nothing left running."""

import os
import subprocess
import sys

import psutil
import pytest
from testkit import ROOT


pytestmark = pytest.mark.timeout(120)


def test_demo_runs_end_to_end_and_cleans_up(tmp_path):
    """With 40 points per party: the size is not the subject here (the README's
    defaults, 150 per party, run the every-point job for a minute more: the slow
    test below, in .ci/run's slow steps)."""
    _check_demo(tmp_path, "--points", "40")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_with_the_readmes_defaults_runs_end_to_end_and_cleans_up(tmp_path):
    _check_demo(tmp_path, timeout=280)


def _check_demo(tmp_path, *extra: str, timeout: float = 110) -> None:
    """Run `secure-meanshift demo` (plus ``extra`` arguments) and check its output,
    its PNG, that nothing is left running and that no log shows a data value."""
    png, keep = tmp_path / "demo.png", tmp_path / "work"
    res = subprocess.run([sys.executable, "-m", "meanshift_cli", "demo", "--plot", str(png),
                          "--keep", str(keep), *extra], capture_output=True, text=True,
                         cwd=ROOT, timeout=timeout)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "succeeded" in res.stdout and "plaintext twin" in res.stdout
    assert "scikit-learn" in res.stdout and "max |secure - twin|" in res.stdout
    assert png.exists() and png.stat().st_size > 10_000
    assert "Traceback" not in res.stderr
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if str(keep) in " ".join(p.info["cmdline"] or [])]
    assert not left, f"demo left processes running: {left}"
    # nor orphaned MPC workers (spares included): every worker still alive has its node
    import time

    time.sleep(1)
    orphans = [p.pid for p in psutil.process_iter(["cmdline", "ppid"])
               if "party_node.worker" in " ".join(p.info["cmdline"] or [])
               and p.info["ppid"] == 1]
    assert not orphans, f"orphaned workers: {orphans}"
    # no log of the coordinator or of a node shows a data value
    import glob
    import re

    import numpy as np

    data = np.concatenate([np.loadtxt(f, delimiter=",", skiprows=1).ravel()
                           for f in glob.glob(str(keep / "*.csv"))])
    logs = glob.glob(str(keep / "*.log"))
    assert len(logs) == 5          # coordinator, three party nodes, the dealer
    for log in logs:
        for m in re.finditer(r"-?\d+\.(\d{4,})", open(log).read()):
            digits = len(m.group(1))
            assert not np.any(np.round(data, digits) == float(m.group(0))), \
                f"{os.path.basename(log)} shows a data value"


def test_demo_bad_arguments_give_a_message(tmp_path):
    res = subprocess.run([sys.executable, "-m", "meanshift_cli", "demo", "--parties", "9",
                          "--plot", ""], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2 and "--parties" in res.stderr and "Traceback" not in res.stderr
