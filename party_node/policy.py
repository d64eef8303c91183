"""A node's policy as pure functions: (the node's config, the signed job) -> a
reason naming the rule, or '' when the job is acceptable. Never a row or a
value in a reason: the details stay in the node's local log. Whether a job is
accepted does not depend on where the data lie (docs/leakage.md)."""

from __future__ import annotations

from typing import Optional

from meanshift_proto.v1 import service_pb2 as pb
from meanshift_rpc import jobspec
from secure_meanshift.errors import Refused

from .config import NodeConfig


def mpc_reason(cfg: NodeConfig, spec: pb.JobSpec) -> str:
    """Who deals and how the links are protected: the node's own rules."""
    pol = cfg.policy
    if not spec.dealer:
        return "the job names no dealer (a party would have to deal the randomness)"
    if cfg.role == "party" and "*" not in pol.trusted_dealers and \
            spec.dealer not in pol.trusted_dealers:
        if not pol.trusted_dealers:
            return (f"dealer {spec.dealer} is not trusted by local policy (policy."
                    "trusted_dealers is empty: the operator names the dealers this party "
                    "trusts not to collude)")
        return f"dealer {spec.dealer} is not trusted by local policy"
    transport = spec.transport or "tls"
    if transport == "trusted-network" and not pol.allow_plaintext_mpc:
        return "transport 'trusted-network' (plaintext MPC links) not allowed by local policy"
    if transport == "tls" and cfg.tls is None:
        return "this node has no TLS identity for transport 'tls'"
    return ""


def privacy_reason(cfg: NodeConfig, spec: pb.JobSpec, dataset: str) -> str:
    """DP required unless the policy allows exact results; a DP job's delta
    within the data set's budget (the epsilon is checked when charged)."""
    priv = jobspec.privacy_of(spec)
    if priv is None:
        if not cfg.policy.allow_exact_results:
            return ("policy: this party accepts differentially private jobs only (give "
                    "the job privacy: {epsilon, delta}; exact results need "
                    "allow_exact_results: true in the node's policy)")
        return ""
    budget = cfg.budget(dataset)
    if priv.delta > budget.delta:
        return (f"policy: the job's delta {priv.delta:.3g} exceeds the privacy budget's "
                f"delta {budget.delta:.3g} of data set {dataset!r}")
    return ""


def my_dataset(cfg: NodeConfig, spec: pb.JobSpec) -> Optional[str]:
    """The data set the job names for this party, None if it is not a party of it."""
    return next((p.dataset for p in spec.parties if p.id == cfg.party_id), None)


def scaling_reason(cfg: NodeConfig, spec: pb.JobSpec) -> str:
    """``scale: standard`` opens the pooled mean and standard deviation of every
    feature (docs/leakage.md [pooled-moments]): refused unless policy.allow_scaling."""
    if spec.scaling == "standard" and not cfg.policy.allow_scaling:
        return ("policy: the job standardises its features (scale: standard), which opens "
                "the pooled mean and standard deviation of every feature; not allowed by "
                "local policy (policy.allow_scaling: false)")
    return ""


def _limits_reason(cfg: NodeConfig, spec: pb.JobSpec) -> str:
    """The policy's numeric limits. The bandwidth floor (policy.min_bandwidth_fraction
    x the bounds' largest span) is checked here when the job gives h in the bounds'
    units; an estimated h or one in standardised units (scale: standard) is checked
    by the worker once known, against the floor scaled with the bounds
    (runtime.run_party's min_bandwidth)."""
    pol = cfg.policy
    span = max(h - l for l, h in zip(spec.bounds_lo, spec.bounds_hi))
    if not floor_at_run_time(spec) and spec.bandwidth < pol.min_bandwidth_fraction * span:
        return (f"policy: the bandwidth {spec.bandwidth:g} is below this party's minimum "
                f"{pol.min_bandwidth_fraction * span:g} (policy.min_bandwidth_fraction "
                f"{pol.min_bandwidth_fraction:g} x the bounds' largest span {span:g})")
    known = seeds_known_at_acceptance(spec)
    if known is not None and known > pol.max_dust:
        return seeds_reason(known, spec.seeding, pol.max_dust)
    if spec.max_iter > pol.max_iter:
        return (f"policy: max_iter {spec.max_iter}, more iterations than this party "
                f"allows (policy.max_iter {pol.max_iter})")
    if (spec.min_cluster_size or 1) < pol.min_cluster_size:
        return (f"policy: the minimum cluster size {spec.min_cluster_size or 1} is below "
                f"this party's (policy.min_cluster_size {pol.min_cluster_size})")
    return ""


def floor_at_run_time(spec: pb.JobSpec) -> bool:
    """The bandwidth floor is checked by the worker: h is estimated, or in
    standardised units (scale: standard)."""
    return spec.bandwidth_auto or spec.scaling == "standard"


class PolicyRefusal(Refused):
    """A rule of the party's policy that can only be checked once the job runs
    (the seeds of every-point seeding depend on the parties' row counts, which
    are exchanged at the start: public, docs/leakage.md [sizes])."""


def seeds_reason(seeds: int, seeding: str, max_dust: int) -> str:
    """The refusal for a job that starts more centroids than policy.max_dust."""
    return (f"policy: {seeds} initial centroids (seeding {seeding or 'auto'}), more than "
            f"this party allows (policy.max_dust {max_dust})")


def seeds_known_at_acceptance(spec: pb.JobSpec) -> Optional[int]:
    """The most seeds the job's own fields allow: its dusts plus every party's
    binned modes (seeding auto: its dust-and-modes branch), or None where only
    the row counts fix them (every-point seeding, the DP grid, scikit-learn's
    candidate bins, and auto's branches that pick those): those are checked when
    the sizes are exchanged (run_time_seeds_check)."""
    d = jobspec.to_dict(spec)             # the defaults filled in
    seeding = d["seeding"]
    if seeding not in ("dust", "bins", "both", "auto"):
        return None
    dust = d["dust"] if seeding in ("dust", "both", "auto") else 0
    bins = d["seeds_per_party"] * len(spec.parties) if seeding != "dust" else 0
    return dust + bins


def run_time_seeds_check(max_dust: int):
    """A progress hook for the worker: at the engine's "sizes" event, refuse a
    job whose seeds exceed policy.max_dust (raises PolicyRefusal)."""
    def check(ev: dict) -> None:
        if ev.get("stage") == "sizes" and int(ev.get("seeds", 0)) > max_dust:
            raise PolicyRefusal(seeds_reason(int(ev["seeds"]), ev.get("seeding", ""),
                                             max_dust))
    return check


def job_reason(cfg: NodeConfig, spec: pb.JobSpec, submitter: str) -> str:
    """Every rule of a party's policy that reads the job only (not the data set's
    state): dealer and transport, party, kernel, parties, submitter, limits,
    receivers, data set name, privacy."""
    pol = cfg.policy
    reason = mpc_reason(cfg, spec)
    if reason:
        return reason
    name = my_dataset(cfg, spec)
    if name is None:
        return "this node is not a party of the job"
    if spec.kernel not in pol.kernels:
        return (f"kernel {spec.kernel!r} not allowed by local policy (policy.kernels: "
                f"{', '.join(pol.kernels)})")
    if len(spec.parties) < pol.min_parties:
        return (f"local policy requires at least {pol.min_parties} parties "
                f"(policy.min_parties; the job has {len(spec.parties)})")
    if "*" not in pol.allowed_submitters and submitter not in pol.allowed_submitters:
        return f"submitter {submitter} may not run jobs on this data"
    reason = _limits_reason(cfg, spec) or scaling_reason(cfg, spec)
    if reason:
        return reason
    if "*" not in pol.allowed_receivers:
        bad = [r for r in spec.reveal_to if r not in pol.allowed_receivers]
        if bad:
            return (f"the result may not go to {bad[0]} (policy.allowed_receivers: "
                    f"{', '.join(map(str, pol.allowed_receivers))})")
    if name not in cfg.datasets:
        return f"no data set named {name!r} on this node"
    return privacy_reason(cfg, spec, name)


def dataset_reason(spec: pb.JobSpec, name: str, status) -> str:
    """The data set's health as checked when it was (re)loaded, never against this
    job's bounds: rows outside them are clipped by the worker
    (runtime.prepare_local), so whether a job is accepted does not depend on where
    the data lie. ``status``: its datasets.Status, or None."""
    if status is None or not status.available:
        return status.problem if status is not None else f"data set {name!r} is unavailable"
    if len(status.columns) != len(spec.bounds_lo):
        return (f"data set {name!r} has {len(status.columns)} columns, the job's bounds "
                f"{len(spec.bounds_lo)}")
    return ""
