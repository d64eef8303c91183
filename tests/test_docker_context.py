"""scripts/docker-context.sh (used by scripts/docker-offline-build.sh) makes the
image's build context in the folder it is given and writes nothing into the
checkout (issue 20); it refuses a folder that is not empty."""

from __future__ import annotations

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "docker-context.sh")

# ~25 s (builds the project wheel): slow, run by .ci/run
pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def _checkout_files() -> set:
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "docker"], cwd=ROOT,
                         capture_output=True, text=True)
    return set(out.stdout.splitlines())


def test_context_goes_to_the_given_folder_only(tmp_path):
    wheels = tmp_path / "wh"
    wheels.mkdir()
    (wheels / "dummy-1.0-py3-none-any.whl").write_bytes(b"x")
    before = _checkout_files()
    out = tmp_path / "ctx"
    env = dict(os.environ, PYTHON=os.path.join(ROOT, ".venv", "bin", "python"))
    r = subprocess.run([SCRIPT, str(wheels), str(out)], capture_output=True, text=True,
                       env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (out / "Dockerfile").exists() and (out / "party_node" / "node.py").exists()
    assert (out / "docker" / "wheels" / "dummy-1.0-py3-none-any.whl").exists()
    assert [p for p in os.listdir(out / "docker" / "dist") if p.startswith("secure_meanshift-")]
    assert not list(out.rglob("__pycache__"))
    assert _checkout_files() == before
    r = subprocess.run([SCRIPT, str(wheels), str(out)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 2 and "is not empty" in r.stderr
