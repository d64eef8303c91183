"""`secure-meanshift init-cluster`: everything a local federation needs, written
into one folder per role (what docker-compose's one-shot init service runs).

  OUT/coordinator/   ca.pem, coordinator.pem/.key
  OUT/<party>/       ca.pem, party_<id>.pem/.key, points.csv (its own synthetic data), node.yaml
  OUT/dealer/        ca.pem, dealer_<name>.pem/.key, node.yaml (no data)
  OUT/client/        ca.pem, analyst_<name>.pem/.key, job.yaml, long-job.yaml
  OUT/ca/            ca.pem, ca.key (the development CA: keep it away from the others)
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import yaml

from meanshift_rpc.tls import make_dev_pki
from party_node.config import write_node_config
from secure_meanshift.data import split_even, synthetic_blobs

DATA_SEED = 7
EXACT_NOTE = ("# policy.allow_exact_results: true only because this demo federation runs on\n"
              "# synthetic data and checks its centroids against the plaintext twin. On real\n"
              "# data leave it out: two legal exact jobs differenced reveal a record; the\n"
              "# default accepts differentially private jobs only (docs/operating.md).\n")


def synthetic_parts(parties: int, points: int, seed: int = DATA_SEED) -> list:
    """Deterministic demo data: what every role folder gets (and CI recomputes)."""
    pts, _ = synthetic_blobs(points * parties, 6, 2, 0.03, seed=seed)
    return split_even(pts, parties, seed=seed)


def init_cluster(out: str, parties: list, coordinator_host: str = "coordinator",
                 coordinator_port: int = 50051, points: int = 150, analyst: str = "demo",
                 port_lo: int = 29500, advertise: dict | None = None,
                 dealer: str = "dealer") -> dict:
    """Write certificates, each party's synthetic data, node configs and job
    specs into one folder per role under ``out`` (see the module's doc)."""
    ca_dir = os.path.join(out, "ca")
    files = make_dev_pki(ca_dir, ["coordinator", f"analyst:{analyst}", f"dealer:{dealer}"]
                         + [f"party:{p}" for p in parties],
                         hosts=[coordinator_host, "localhost", "127.0.0.1"])

    def hand_out(role: str, identity: str) -> str:
        d = os.path.join(out, role)
        os.makedirs(d, exist_ok=True)
        f = files[identity]
        for src in (f.ca, f.cert, f.key):
            shutil.copy2(src, d)
        return d

    hand_out("coordinator", "coordinator")
    coordinator = f"{coordinator_host}:{coordinator_port}"
    ports = (port_lo, port_lo + 19)
    parts = synthetic_parts(len(parties), points)
    for i, p in enumerate(parties):
        d = hand_out(p, f"party:{p}")
        np.savetxt(os.path.join(d, "points.csv"), parts[i], delimiter=",", header="x,y",
                   comments="")
        # exact results: the compose demo runs on synthetic data and checks the
        # centroids against the twin (docker/check_centroids.py); a node on real
        # data keeps the default (DP jobs only, privacy_budget)
        write_node_config(os.path.join(d, "node.yaml"), p, coordinator,
                          advertise=(advertise or {}).get(p, p), port_range=ports,
                          datasets={"demo": "points.csv"},
                          policy={"trusted_dealers": [dealer], "allow_exact_results": True},
                          header=EXACT_NOTE, results_dir="results", mpc_timeout_s=20)
    d = hand_out("dealer", f"dealer:{dealer}")
    write_node_config(os.path.join(d, "node.yaml"), dealer, coordinator, dealer=True,
                      advertise=(advertise or {}).get("dealer", "dealer"), port_range=ports,
                      mpc_timeout_s=20)
    d = hand_out("client", f"analyst:{analyst}")
    job = {"name": "compose-demo", "parties": [{"id": p, "dataset": "demo"} for p in parties],
           "bandwidth": 0.1, "dust": 16, "kernel": "flat", "max_iter": 30,
           "bounds": {"lo": [0, 0], "hi": [1, 1]}, "reveal_to": [f"analyst:{analyst}"],
           "summary": "exact", "dealer": dealer}
    with open(os.path.join(d, "job.yaml"), "w") as fh:
        yaml.safe_dump(job, fh, sort_keys=False)
    with open(os.path.join(d, "long-job.yaml"), "w") as fh:
        yaml.safe_dump({**job, "name": "long", "max_iter": 1000, "oblivious": True}, fh,
                       sort_keys=False)
    return {"parties": parties, "points": points, "seed": DATA_SEED}
