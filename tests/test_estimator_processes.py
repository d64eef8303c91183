"""Issue 18: the README's snippet runs as pasted in a plain script (no
``if __name__ == "__main__":`` guard), and Ctrl-C / SIGTERM / the caller's death
end every party process at once."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def readme_snippet() -> str:
    """The first Python block of the README's "The engine in one screen"."""
    with open(os.path.join(ROOT, "README.md")) as fh:
        text = fh.read()
    section = text[text.index("## The engine in one screen"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("```", start)]


SNIPPET = readme_snippet() + textwrap.dedent("""\
    print("centres", np.round(ms.cluster_centers_, 1).tolist())
    print("labels", [len(lab) for lab in ms.labels_])
    """)

LONG_FIT = textwrap.dedent("""\
    import numpy as np
    from secure_meanshift import SecureMeanShift

    rng = np.random.default_rng(0)
    parts = [rng.uniform(0, 1, (900, 3)), rng.uniform(0, 1, (900, 3))]
    SecureMeanShift(bandwidth=0.05, seeding="points", max_iter=300, verbose=0).fit(parts)
    print("finished")
    """)


def _run_script(tmp_path, text: str, **kw) -> subprocess.Popen:
    script = tmp_path / "user_script.py"
    script.write_text(text)
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, str(script)], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _children(pid: int) -> set:
    """Every live descendant of pid (scanning /proc; zombies count as gone)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parent.items() if p in frontier} - found
        found |= frontier
    return found


def _alive(pids: set) -> set:
    left = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                    left.add(pid)
        except OSError:
            pass
    return left


def test_readme_snippet_runs_without_a_main_guard(tmp_path):
    proc = _run_script(tmp_path, SNIPPET)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    assert "centres [[1.0, 1.0], [-0.0, 0.0]]" in out or "centres [[1.0, 1.0], [0.0, 0.0]]" in out
    assert "labels [40, 40]" in out
    assert "Traceback" not in err and "freeze_support" not in err


@pytest.mark.slow     # a kernel start plus a secure fit: about a minute on the shared machine
def test_readme_snippet_runs_in_a_notebook_kernel(tmp_path):
    pytest.importorskip("ipykernel")
    manager = pytest.importorskip("jupyter_client.manager")
    km, kc = manager.start_new_kernel(kernel_name="python3", cwd=str(tmp_path),
                                      env={**os.environ, "PYTHONPATH": ROOT},
                                      startup_timeout=120)
    out: list = []

    def collect(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("ERROR " + msg["content"]["ename"])

    try:
        reply = kc.execute_interactive(SNIPPET, timeout=240, output_hook=collect)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(out)
    assert reply["content"]["status"] == "ok", text[-2000:]
    assert "labels [40, 40]" in text and "centres [[1.0, 1.0]" in text


@pytest.mark.parametrize("sig", [signal.SIGINT,
                                 pytest.param(signal.SIGTERM, marks=pytest.mark.slow),
                                 pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_cancelling_the_caller_ends_every_party_process(tmp_path, sig):
    proc = _run_script(tmp_path, LONG_FIT)
    try:
        deadline = time.monotonic() + 120
        kids: set = set()
        while time.monotonic() < deadline and len(kids) < 3:   # 2 parties + the dealer
            time.sleep(0.5)
            kids = _children(proc.pid)
            assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert len(kids) >= 3, "the party processes did not start"
        time.sleep(3.0)                      # let them get going
        kids |= _children(proc.pid)
        os.kill(proc.pid, sig)
        proc.wait(timeout=15)
        end = time.monotonic() + 5
        while _alive(kids) and time.monotonic() < end:
            time.sleep(0.2)
        assert not _alive(kids), f"left running after {sig.name}: {sorted(_alive(kids))}"
        assert "finished" not in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


class _Alive:
    def is_alive(self):
        return True


def test_a_silent_run_fails_after_a_multiple_of_timeout_s_without_progress():
    import queue as q

    from secure_meanshift.errors import MPCError
    from secure_meanshift.simulate import STALL_FACTOR, _collect

    t = time.perf_counter()
    with pytest.raises(MPCError, match=r"no progress from the parties for 1.5 s"):
        _collect(q.Queue(), [_Alive(), _Alive(), _Alive()], 2, 1.5 / STALL_FACTOR, None)
    assert 1.4 < time.perf_counter() - t < 5


def test_a_run_that_keeps_progressing_is_not_cut_off():
    """The deadline scales with the job: events reset it (not timeout_s * max_iter)."""
    import queue as q
    import threading

    from secure_meanshift.simulate import STALL_FACTOR, _collect

    out, seen = q.Queue(), []

    def parties():
        for i in range(1, 7):
            time.sleep(0.4)
            out.put(("progress", 0, {"stage": "iteration", "iteration": i, "max_iter": 6}))
        out.put(("result", 0, "r0"))
        out.put(("result", 1, "r1"))

    threading.Thread(target=parties, daemon=True).start()
    results, errors = _collect(out, [_Alive(), _Alive(), _Alive()], 2, 1.0 / STALL_FACTOR,
                               seen.append)
    assert results == {0: "r0", 1: "r1"} and not errors and len(seen) == 6


def test_the_twin_checks_points_as_the_parties_do():
    import numpy as np

    from secure_meanshift import InputError, MeanShiftParams, reference_meanshift

    p = MeanShiftParams(bandwidth=0.2, bounds=([0, 0], [1, 1]))
    good = np.full((5, 2), 0.5)
    bad = good.copy()
    bad[2, 1] = np.nan
    with pytest.raises(InputError, match="party 1: row 2 contains NaN"):
        reference_meanshift([good, bad], p)
    bad[2, 1] = 1.5
    with pytest.raises(InputError, match="party 1: row 2 is outside the public bounds"):
        reference_meanshift([good, bad], p)
