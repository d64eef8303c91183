"""Fixtures every test file can use. The import path (the repository root,
tests/ and tests/service/, for the shared test modules such as cluster.py,
mpc_jobs.py and testkit.py) is set once in pyproject.toml's [tool.pytest.ini_options]
``pythonpath``, not by sys.path edits in test files."""

from __future__ import annotations

import inspect
from typing import Callable

import pytest

import testkit


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a free loopback port (testkit.free_port)."""
    return testkit.free_port


@pytest.fixture
def dev_pki(tmp_path) -> Callable[..., dict]:
    """make(names, directory=None, **kw) -> {identity: TLSFiles}: the service's
    development CA (in tmp_path/"certs" unless ``directory``) with a certificate
    per identity (testkit.dev_pki)."""
    def make(names, directory=None, **kw) -> dict:
        return testkit.dev_pki(str(directory or tmp_path / "certs"), list(names), **kw)
    return make


@pytest.fixture
def job_spec() -> Callable[..., dict]:
    """The job-spec factory (testkit.job_spec): job_spec(parties, dealer, **fields)."""
    return testkit.job_spec


def _with_default(monkeypatch, fn, name: str, value) -> None:
    """Change the default of ``fn``'s keyword ``name`` for this test only (every
    reference to fn sees it, whichever module imported it)."""
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.default is not inspect.Parameter.empty
              and p.kind is not inspect.Parameter.KEYWORD_ONLY]
    defaults = list(fn.__defaults__)
    defaults[[p.name for p in params].index(name)] = value
    monkeypatch.setattr(fn, "__defaults__", tuple(defaults))


@pytest.fixture
def in_memory_links(monkeypatch) -> None:
    """Secure runs in this test use the engine's in-memory transport
    (transport="local": ranks forked from the test process over socket pairs)
    instead of spawned processes over TLS, for tests whose subject is not the
    link or the process start: run_simulation and run_mpc_function (and so
    SecureMeanShift, SecureStandardScaler and estimate_bandwidth) default to it.
    The TLS path stays covered by the CLI, process, security and service tests."""
    from secure_meanshift import simulate

    _with_default(monkeypatch, simulate.run_simulation, "transport", "local")
    _with_default(monkeypatch, simulate.run_mpc_function, "transport", "local")


# Files that take longest (measured with --durations), started first so that the
# the workers (pyproject's "-n 3 --dist loadfile") do not end on one long file.
LONGEST_FIRST = ("test_security.py", "service/test_failures.py", "service/test_service.py",
                 "test_engine_accuracy.py", "service/test_demo.py", "test_point_seeds.py",
                 "test_estimator_processes.py", "test_division.py",
                 "service/test_result_shares.py", "test_privacy.py")


def pytest_collection_modifyitems(config, items) -> None:
    """Order the collected tests by file: LONGEST_FIRST's files first, the rest
    as collected (a stable sort: each file's tests stay together, in order)."""
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        for i, name in enumerate(LONGEST_FIRST):
            if path == f"tests/{name}":
                return i
        return len(LONGEST_FIRST)
    items.sort(key=rank)
