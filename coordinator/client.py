"""A small Python client for the coordinator; the CLI is a thin layer over it.

    from coordinator.client import Client
    c = Client("localhost:50051", tls_dir="certs", identity="analyst:alice")
    job = c.submit(open("job.yaml").read())
    for ev in c.watch(job["job_id"]): print(ev)
    centroids = c.result(job["job_id"])          # numpy array, data units
"""

from __future__ import annotations

import os
from typing import Iterator, Optional, Union

import grpc
import numpy as np
import yaml
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meanshift_proto.v1 import service_pb2 as pb
from meanshift_proto.v1 import service_pb2_grpc as pb_grpc
from meanshift_rpc import DEFAULT_DEADLINE_S
from meanshift_rpc.tls import IdentityError, TLSFiles, cert_info, open_channel

TERMINAL = ("succeeded", "failed", "cancelled")
WATCH_DEADLINE_S = 6 * 3600.0


def _d(msg) -> dict:
    return MessageToDict(msg, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)


def _job(msg) -> dict:
    """A JobInfo as a dict; its dealer read from the job's spec when the
    coordinator leaves the field empty (no `"dealer": ""` in job JSON)."""
    d = _d(msg)
    if not d.get("dealer"):
        try:
            spec = yaml.safe_load(d.get("spec_yaml") or "")
        except yaml.YAMLError:
            spec = None
        dealer = spec.get("dealer") if isinstance(spec, dict) else None
        if dealer:
            d["dealer"] = str(dealer)
        else:
            d.pop("dealer", None)
    return d


class Client:
    def __init__(self, address: str, tls_dir: Optional[str] = None, identity: str = "",
                 tls: Optional[TLSFiles] = None, insecure: bool = False,
                 server_name: Optional[str] = None, deadline_s: float = DEFAULT_DEADLINE_S):
        if not insecure and tls is None:
            if not tls_dir or not identity:
                raise ValueError("give tls_dir and identity (or tls files), or insecure=True")
            tls = TLSFiles.in_dir(tls_dir, identity)
        self.deadline = deadline_s
        self.identity = identity if insecure or tls is None else _cert_identity(tls, identity)
        self.tls = None if insecure else tls
        self.columns: list = []
        self.suppressed = 0
        self.tls_dir = tls_dir
        self.channel = open_channel(address, None if insecure else tls, identity, server_name)
        self.stub = pb_grpc.CoordinatorStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def submit(self, spec: Union[str, dict]) -> dict:
        """Sign the canonical job with this identity's key and submit it. A spec
        that does not parse goes unsigned: the coordinator names the bad field."""
        from meanshift_rpc import jobspec, signing  # torch: not for job list/cancel

        text = spec if isinstance(spec, str) else yaml.safe_dump(spec)
        req = pb.SubmitJobRequest(spec_yaml=text)
        if self.tls is not None:
            try:
                _, cert, key = self.tls.read()
                signed = signing.sign_spec(text, key, cert,
                                           receiver_certs=self._receiver_certs(text))
                req.signed_spec, req.signature, req.signer_cert = (
                    signed.payload, signed.signature, signed.cert_pem)
            except jobspec.SpecError:
                pass
        return _job(self.stub.SubmitJob(req, timeout=self.deadline))

    def _receiver_certs(self, text: str) -> dict:
        """Other analyst receivers' certificates, from the TLS folder when present
        (results are sealed to them; a node refuses a job missing one)."""
        from meanshift_rpc import jobspec  # torch: not for job list/cancel

        out = {}
        for r in jobspec.parse(text).reveal_to:
            path = os.path.join(self.tls_dir or "", r.replace(":", "_") + ".pem")
            if r.startswith("analyst:") and self.tls_dir and os.path.exists(path):
                with open(path, "rb") as fh:
                    out[r] = fh.read()
        return out

    def status(self, job_id: str) -> dict:
        return _job(self.stub.GetJob(pb.JobRef(job_id=job_id), timeout=self.deadline))

    def list(self, limit: int = 50) -> list:
        return [_job(j) for j in self.stub.ListJobs(pb.ListJobsRequest(limit=limit),
                                                  timeout=self.deadline).jobs]

    def watch(self, job_id: str, deadline_s: float = WATCH_DEADLINE_S) -> Iterator[dict]:
        for ev in self.stub.WatchJob(pb.JobRef(job_id=job_id), timeout=deadline_s):
            yield _d(ev)

    def wait(self, job_id: str, on_event=None, deadline_s: float = WATCH_DEADLINE_S) -> dict:
        for ev in self.watch(job_id, deadline_s):
            if on_event:
                on_event(ev)
        return self.status(job_id)

    def result(self, job_id: str, with_sizes: bool = False):
        """The centroids (data units) of a job this identity receives: every party's
        sealed share, each signature checked against the CA and the signed job,
        combined here (meanshift_rpc.results.open_result). A plain, unsigned,
        forged or incomplete result raises results.ResultError."""
        from meanshift_rpc.results import open_result  # torch: not for job list/cancel

        r = self.stub.GetResult(pb.JobRef(job_id=job_id), timeout=self.deadline)
        if self.tls is None:                 # insecure: local experiments, nothing to check
            out, self.columns = open_result(r, job_id, self.identity, None, None)
        else:
            ca, _, key = self.tls.read()
            out, self.columns = open_result(r, job_id, self.identity, key, ca)
        self.suppressed = out.suppressed or 0
        sizes = out.sizes if out.sizes is not None else np.zeros(0)
        return (out.centroids, sizes) if with_sizes else out.centroids

    def result_table(self, job_id: str) -> tuple[np.ndarray, list]:
        """The centroids and their column names (rank 0's data set's, as that party
        sealed them, else x0, x1, ...)."""
        cents = self.result(job_id)
        d = cents.shape[1] if cents.ndim == 2 else 0
        cols = self.columns if len(self.columns) == d else [f"x{i}" for i in range(d)]
        return cents, cols

    def cancel(self, job_id: str) -> dict:
        return _job(self.stub.CancelJob(pb.JobRef(job_id=job_id), timeout=self.deadline))

    def parties(self) -> list:
        return [_d(p) for p in self.stub.ListParties(pb.Empty(), timeout=self.deadline).parties]

    def audit(self, limit: int = 200, job_id: str = "") -> list:
        """The newest audit rows (operators only; PERMISSION_DENIED for others)."""
        return [_d(e) for e in self.stub.ListAudit(pb.AuditRequest(limit=limit, job_id=job_id),
                                                   timeout=self.deadline).entries]

    def healthy(self) -> bool:
        try:
            r = health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=self.deadline)
            return r.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False


def _cert_identity(tls: TLSFiles, given: str) -> str:
    """The identity in this client's own certificate (what the coordinator sees);
    ``given`` if the certificate names none (the coordinator then refuses it)."""
    try:
        return cert_info(tls.read()[1]).identity
    except (IdentityError, OSError, ValueError):
        return given

