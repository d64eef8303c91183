"""A real local cluster for the service tests: certificates, a coordinator and
party nodes as separate processes (the `secure-meanshift` CLI), TLS everywhere."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

import numpy as np

from coordinator.client import Client
from party_node.config import write_node_config
from secure_meanshift.data import separated_blobs, split_even
# ROOT and free_port are re-exported for the service tests
from testkit import DEALER, ROOT, dev_pki, free_port, job_spec  # noqa: F401

NAMES = ["alpha", "beta", "gamma", "delta"]

DEALER_KEY = f"dealer:{DEALER}"    # how the coordinator lists the dealer node


class Cluster:
    def __init__(self, tmp: str, parties: int = 3, points: int = 60, coord_host="127.0.0.1",
                 node_hosts: Optional[list] = None, wrap: Optional[dict] = None,
                 heartbeat_timeout: float = 6.0, mpc_timeout: float = 20.0,
                 dealer_host: str = "127.0.0.1", coordinator_args: Optional[list] = None,
                 max_concurrent_jobs: int = 1, analysts: tuple = ("ann", "eve")):
        self.tmp, self.names = tmp, NAMES[:parties]
        self.certs = os.path.join(tmp, "certs")
        self.coord_host = coord_host
        self.node_hosts = node_hosts or ["127.0.0.1"] * parties
        self.dealer_host = dealer_host
        self.wrap = wrap or {}            # name -> command prefix (e.g. ip netns exec)
        self.port = free_port()
        self.address = f"{coord_host}:{self.port}"
        self.db = os.path.join(tmp, "coordinator.db")
        self.record = os.path.join(tmp, "received.txt")
        self.heartbeat_timeout, self.mpc_timeout = heartbeat_timeout, mpc_timeout
        self.coordinator_args = list(coordinator_args or [])   # more `coordinator serve` flags
        self.max_concurrent_jobs = max_concurrent_jobs         # every node's and the dealer's
        # rendezvous ports: a random block per cluster (other test runs share the machine)
        self.mpc_base = random.randrange(20000, 32000 - 40 * (len(NAMES) + 1), 40)
        dev_pki(self.certs, ["coordinator", *(f"analyst:{a}" for a in analysts),
                             "operator:olga", f"dealer:{DEALER}"]
                + [f"party:{n}" for n in NAMES], hosts=["localhost", coord_host])
        pts, self.centres = separated_blobs(points * parties, 4, 2, 0.015, min_gap=0.35,
                                            seed=11)
        self.parts = split_even(pts, parties, 11)
        self.procs: dict = {}
        for i, n in enumerate(self.names):
            path = os.path.join(tmp, f"{n}.csv")
            np.savetxt(path, self.parts[i], delimiter=",", header="x,y", comments="")
            self.write_config(n, i)
        self.write_config(DEALER, parties, dealer=True)

    def write_config(self, n: str, i: int, dealer: bool = False, **extra) -> str:
        if self.max_concurrent_jobs != 1:
            extra.setdefault("max_concurrent_jobs", self.max_concurrent_jobs)
        if not dealer:
            # the tests' own dealer; exact (non-DP) jobs on the tests' synthetic data
            # (a node's default policy refuses both: a test of those rules overrides them)
            extra["policy"] = {"trusted_dealers": [DEALER], "allow_exact_results": True,
                               **extra.pop("policy", {})}
            extra.setdefault("datasets", {"points": os.path.join(self.tmp, f"{n}.csv")})
        lo = self.mpc_base + 40 * i
        return write_node_config(
            os.path.join(self.tmp, f"{n}.yaml"), n, self.address, dealer=dealer,
            certs=self.certs, server_name="localhost",
            advertise=(self.node_hosts + [self.dealer_host])[i], port_range=(lo, lo + 39),
            results_dir=os.path.join(self.tmp, f"results-{n}"), mpc_timeout_s=20,
            status_file=os.path.join(self.tmp, f"{n}-status.json"), **extra)

    def _start(self, name: str, args: list) -> None:
        log = open(os.path.join(self.tmp, f"{name}.log"), "a")
        cmd = self.wrap.get(name, []) + [sys.executable, "-m", "meanshift_cli", *args]
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=ROOT, start_new_session=True)

    def start_coordinator(self) -> None:
        self._start("coordinator", ["coordinator", "serve", "--listen", self.address,
                                    "--db", self.db, "--tls-dir", self.certs,
                                    "--record", self.record,
                                    "--heartbeat-timeout", str(self.heartbeat_timeout),
                                    "--agreement-timeout", "20",
                                    "--mpc-timeout", str(self.mpc_timeout),
                                    *self.coordinator_args])

    def start_node(self, n: str) -> None:
        self._start(n, ["node", "run", "--config", os.path.join(self.tmp, f"{n}.yaml")])

    def start_dealer(self) -> None:
        self._start(DEALER_KEY, ["dealer", "run", "--config",
                                 os.path.join(self.tmp, f"{DEALER}.yaml")])

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Until the coordinator's port takes connections (nodes started earlier
        would log a first 'not connected' line)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                socket.create_connection((self.coord_host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)

    def start(self, timeout: float = 60.0) -> "Cluster":
        self.start_coordinator()
        self.wait_listening()
        for n in self.names:
            self.start_node(n)
        self.start_dealer()
        self.wait_connected(self.names + [DEALER_KEY], timeout)
        return self

    def client(self, identity: str = "analyst:ann") -> Client:
        return Client(self.address, tls_dir=self.certs, identity=identity,
                      server_name="localhost")

    def wait_connected(self, names: list, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        c = self.client()
        try:
            while time.time() < deadline:
                try:
                    up = {p["id"] for p in c.parties() if p["connected"]}
                    if set(names) <= up:
                        return
                except Exception:
                    pass
                time.sleep(0.3)
        finally:
            c.close()
        raise TimeoutError(f"parties {names} did not connect; logs in {self.tmp}")

    def kill(self, name: str, wait_gone: bool = True) -> None:
        """SIGKILL a process (and its workers); for a node, wait until the
        coordinator has noticed it is gone."""
        p = self.procs.get(name)
        if p and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        if wait_gone and name in self.names:
            self.wait_gone(name)

    def wait_gone(self, name: str, timeout: float = 30.0) -> None:
        """Until the coordinator no longer lists the node as connected (so that a
        restarted node's wait_connected cannot be met by the old connection)."""
        deadline = time.time() + timeout
        c = self.client()
        try:
            while time.time() < deadline:
                try:
                    if not any(q["id"] == name and q["connected"] for q in c.parties()):
                        return
                except Exception:
                    return
                time.sleep(0.1)
        finally:
            c.close()

    def stop(self) -> None:
        for name, p in list(self.procs.items()):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    def spec(self, parties: Optional[list] = None, **kw) -> dict:
        """The tests' job spec (testkit.job_spec) for ``parties`` (default: all)."""
        return job_spec(parties or self.names, **kw)
