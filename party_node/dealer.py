"""The dealer node: the same daemon as a party's (dial out, heartbeat, one
fresh worker per job, up to max_concurrent_jobs at once), for a role that holds no data. It joins each job that
names it as the extra rank world_size and deals the correlated randomness
(secure_meanshift.mpc.dealer); it takes no part in the seed and receives no result.

Like a party node it believes nothing the coordinator says that it can check:
it accepts only jobs that name it, checks the peer list and its rank against
the job's parties, and derives the seed from the parties' commitments and
reveals itself (the seed is part of the job digest every rank compares)."""

from __future__ import annotations

import logging
import threading
from typing import Optional

from meanshift_proto.v1 import service_pb2 as pb

from . import policy
from .node import Job, PartyNode

log = logging.getLogger("dealer_node")


class DealerNode(PartyNode):
    def _policy_check(self, offer: pb.Offer, spec: Optional[pb.JobSpec] = None,
                      submitter: Optional[str] = None) -> str:
        spec = offer.spec if spec is None else spec
        if spec.dealer != self.cfg.party_id:
            return "this node is not the job's dealer"
        return policy.mpc_reason(self.cfg, spec)

    def _charge(self, job: Job) -> str:
        return ""                        # no data, no privacy budget

    def _commitment(self, job: Job) -> bytes:
        return b""                       # the dealer takes no part in the seed

    def _on_reveal(self, req: pb.RevealRequest) -> None:
        return None                      # the dealer takes no part in the seed

    def _on_run(self, run: pb.Run) -> None:
        job = self.jobs.get(run.job_id)
        if job is None:
            return
        seed = self._joint_seed(job, run, {c.party: c.commitment for c in run.commits})
        if seed is None:
            return
        bad = self._check_run(job, run)
        if bad:
            return self._fail(job, bad)
        threading.Thread(target=self._run_worker, args=(job, run, seed), daemon=True).start()

    def _worker_job(self, job: Job, run: pb.Run, seed: int) -> dict:
        return {"role": "dealer", **self._mpc_payload(job, run, seed)}

    def _finished(self, job: Job, run: pb.Run, res: dict) -> None:
        log.info("job %s: dealt %s values", job.id, res.get("dealt", "?"))
        self._last_reply(job, finished=pb.Finished(wall_s=float(res.get("wall_s", 0.0))))
