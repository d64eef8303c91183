"""Check the centroids a compose cluster printed against the plaintext reference
(the engine's twin, secure_meanshift.plaintext.reference_meanshift) on the same
data: the synthetic parts `init-cluster` wrote into the parties' volumes, the
job's spec and the seed the parties agreed on (both from `job list --format json`).

    python docker/check_centroids.py CLIENT_OUTPUT [JOBS_JSON] [--points 150] [--job JOB_ID]

CLIENT_OUTPUT: what `job submit --wait --print-result` printed: text (then JOBS_JSON,
from `job list --format json`, gives spec and seed) or JSON (`--format json`: it
carries centroids, spec and seed itself). Exit 0 when every centroid matches within --tol.
"""
from __future__ import annotations

import argparse
import json
import re
import sys

import numpy as np
import yaml

from meanshift_cli.cluster_init import synthetic_parts
from meanshift_rpc.jobspec import engine_params, parse
from secure_meanshift.centroid_match import match_error
from secure_meanshift.params import MeanShiftParams
from secure_meanshift.plaintext import reference_meanshift

FLOATS = re.compile(r"\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\s+)+-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\s*")


def printed_centroids(text: str) -> np.ndarray:
    try:
        doc = json.loads(text)
        return np.asarray(doc["centroids"], float)
    except (ValueError, KeyError, TypeError):
        rows = [[float(v) for v in line.split()] for line in text.splitlines()
                if FLOATS.fullmatch(line)]
        return np.asarray(rows, float)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("output")
    ap.add_argument("jobs", nargs="?")
    ap.add_argument("--points", type=int, default=150, help="points per party (init-cluster --points)")
    ap.add_argument("--job", help="job id (default: the newest succeeded job)")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()

    text = open(a.output).read()
    jobs = json.load(open(a.jobs)) if a.jobs else json.loads(text)
    jobs = jobs if isinstance(jobs, list) else [jobs]
    job = next(j for j in jobs if (j["job_id"] == a.job if a.job else j["state"] == "succeeded"))
    assert job["state"] == "succeeded", job
    # the stored spec writes unset fields as null, which parse() rejects: drop them
    spec = parse(yaml.safe_dump({k: v for k, v in yaml.safe_load(job["spec_yaml"]).items()
                                 if v is not None}))
    params = MeanShiftParams(**engine_params(spec, int(job["seed_hex"], 16)))
    ref = reference_meanshift(synthetic_parts(len(spec.parties), a.points), params)
    got = printed_centroids(text)
    err, unmatched = match_error(got, ref.centroids)
    print(f"job {job['job_id']}: {len(got)} centroids printed, {len(ref.centroids)} in the "
          f"plaintext reference, max |container - reference| = {err:.2e}")
    if unmatched or not err < a.tol:
        print("MISMATCH\nprinted:\n", got, "\nreference:\n", ref.centroids, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
