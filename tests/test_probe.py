"""The containers' health probe (meanshift_cli.probe): the node's status file's
age and data sets, without the engine (no torch import: a health check every
3 s stays cheap), same exit codes as `node health` (issue 20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from meanshift_cli.probe import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path) -> str:
    cfg = tmp_path / "node.yaml"
    cfg.write_text("party_id: a\nstatus_file: st.json\n")
    return str(cfg)


def test_node_probe_exit_codes(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert main(["node", cfg]) == 3
    assert "has not reached the coordinator" in capsys.readouterr().err
    st = tmp_path / "st.json"
    st.write_text(json.dumps({"datasets": {"p": {"available": True, "problem": ""}}}))
    assert main(["node", cfg]) == 0
    st.write_text(json.dumps({"datasets": {"p": {"available": False, "problem":
                                                 "data set 'p': line 3, column 2 ('bmi'): "
                                                 "not a number"}}}))
    assert main(["node", cfg]) == 1
    out = capsys.readouterr()
    assert "unavailable: data set 'p': line 3, column 2 ('bmi'): not a number" in out.err
    old = time.time() - 60
    os.utime(st, (old, old))
    assert main(["node", cfg]) == 3 and "last heartbeat 60 s ago" in capsys.readouterr().err
    assert main(["node", str(tmp_path / "missing.yaml")]) == 2


def test_node_probe_does_not_load_the_engine(tmp_path):
    code = ("import sys; from meanshift_cli.probe import main; main(['node', sys.argv[1]]); "
            "print(sorted(m for m in ('torch', 'crypten', 'secure_meanshift') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, _config(tmp_path)], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr


def test_status_list_and_cancel_do_not_load_the_engine():
    """`job cancel` took 8 s: most of it loading torch for the kernel registry. The
    commands that do not open a result start without the engine."""
    code = ("import sys; from meanshift_cli.main import main\n"
            "for a in (['job', 'cancel', 'x'], ['job', 'list'], ['job', 'status', 'x'], "
            "['parties']):\n"
            "    main(a + ['--insecure', '--coordinator', '127.0.0.1:1'])\n"
            "print(sorted(m for m in ('torch', 'crypten', 'secure_meanshift') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr
