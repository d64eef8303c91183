"""The job spec: YAML an operator can read, the JobSpec message, and checks
that name the offending field."""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from meanshift_proto.v1 import service_pb2 as pb

from secure_meanshift.kernels import KERNEL_NAMES as KERNELS   # the one registry
from secure_meanshift.errors import InputError
from secure_meanshift.params import MERGE_RULES, SEEDINGS
from secure_meanshift.privacy import PrivacySpec

# Hard limits every spec meets (the nodes' own policies are usually stricter).
MAX_SPEC_BYTES = 64 * 1024
MAX_PARTIES = 32
MAX_DIM = 64
MAX_DUST = 4096
MAX_ITER = 10_000
MIN_BANDWIDTH_FRACTION = 1e-4      # of the bounds' largest span
MAX_ABS_BOUND = 1e12
MAX_REVEAL_TO = 64
DEFAULT_MIN_CLUSTER_SIZE = 5
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
EXAMPLE = """\
name: demo
parties:                 # order = MPC rank
  - {id: hospital-a, dataset: patients}
  - {id: hospital-b, dataset: patients}
bandwidth: 0.1           # data units, or auto (estimated under MPC; quantile: 0.3)
dust: 8
kernel: flat             # flat | gaussian
merge: intensity         # intensity (scikit-learn's) | first
seeding: auto            # auto | dust | bins | both | points | sklearn-bins (auto: points up to 1,000 points, else sklearn-bins if at most 4,096 bins and 8e6 kernel tests an iteration, else both; bins: seeds_per_party local modes per party; points: every row, scikit-learn's seeds, N^2 cost; sklearn-bins: scikit-learn's bin_seeding=True)
max_iter: 30
oblivious: false         # true: always max_iter iterations, nothing revealed early
bounds: {lo: [0, 0], hi: [1, 1]}   # public feature bounds
reveal_to: [hospital-a, "analyst:alice"]
summary: auto            # exact | auto | cell size in bandwidths
dealer: dealer-1         # makes the correlated randomness; holds no data
transport: tls           # MPC links: tls | trusted-network (plaintext; policy must allow)
privacy: {epsilon: 1.0, delta: 1.0e-6}   # differentially private result (docs/privacy.md);
                         # null: exact results (a node must allow them)
"""
TRANSPORTS = ("tls", "trusted-network")
# names people use for "one of the computing parties deals": always refused
FIRST_PARTY = ("first-party", "tfp", "trusted-first-party", "trusted_first_party")


class SpecError(ValueError):
    """Invalid job spec; the message starts with the field name."""


def _num(d: dict, key: str, default=None, positive=False, integer=False, maximum=None):
    v = d.get(key)
    if v is None:          # absent or null (to_yaml writes null for "default")
        v = default
    if v is None:
        raise SpecError(f"{key}: required")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(f"{key}: must be a number")
    if not math.isfinite(v) or (positive and v <= 0):
        raise SpecError(f"{key}: must be a positive finite number" if positive
                        else f"{key}: must be finite")
    if integer and int(v) != v:
        raise SpecError(f"{key}: must be an integer")
    if maximum is not None and v > maximum:
        raise SpecError(f"{key}: at most {maximum}")
    return int(v) if integer else float(v)


def parse(text: str) -> pb.JobSpec:
    if not isinstance(text, str) or len(text.encode("utf-8", "replace")) > MAX_SPEC_BYTES:
        raise SpecError(f"spec: at most {MAX_SPEC_BYTES} bytes of YAML")
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise SpecError(f"yaml: not valid YAML{'' if line is None else f' (line {line + 1})'}") \
            from None
    except (ValueError, RecursionError):
        raise SpecError("yaml: not valid YAML") from None
    if not isinstance(d, dict):
        raise SpecError("spec: expected a mapping of fields")
    known = {"name", "parties", "bandwidth", "dust", "kernel", "max_iter", "tol", "oblivious",
             "bounds", "reveal_to", "merge_radius", "return_sizes", "summary",
             "min_cluster_size", "dealer", "transport", "provider", "merge",
             "seeding", "seeds_per_party", "quantile", "min_weight", "privacy"}
    unknown = sorted(map(str, set(d) - known))
    if unknown:
        raise SpecError(f"{unknown[0][:64]}: unknown field")
    parties = d.get("parties")
    if not isinstance(parties, list) or len(parties) < 2:
        raise SpecError("parties: a list of at least 2 {id, dataset} entries is required")
    if len(parties) > MAX_PARTIES:
        raise SpecError(f"parties: at most {MAX_PARTIES}")
    refs = []
    for i, p in enumerate(parties):
        if not isinstance(p, dict) or not isinstance(p.get("id"), str) or \
                not isinstance(p.get("dataset"), str) or not p["id"] or not p["dataset"]:
            raise SpecError(f"parties[{i}]: needs an 'id' and a 'dataset' (strings)")
        if not NAME_RE.fullmatch(p["id"]) or not NAME_RE.fullmatch(p["dataset"]):
            raise SpecError(f"parties[{i}]: id and dataset are names of letters, digits, "
                            "'.', '_', '-' (at most 64)")
        refs.append(pb.PartyRef(id=p["id"], dataset=p["dataset"]))
    if len({r.id for r in refs}) != len(refs):
        raise SpecError("parties: a party is listed twice")
    kernel = d.get("kernel", "flat")
    if not isinstance(kernel, str) or kernel not in KERNELS:
        raise SpecError(f"kernel: must be one of {', '.join(KERNELS)}")
    b = d.get("bounds")
    if not isinstance(b, dict) or not isinstance(b.get("lo"), list) or \
            not isinstance(b.get("hi"), list):
        raise SpecError("bounds: expected {lo: [..], hi: [..]}")
    if len(b["lo"]) > MAX_DIM or len(b["hi"]) > MAX_DIM:
        raise SpecError(f"bounds: at most {MAX_DIM} features")
    if any(isinstance(v, (bool, str)) for v in b["lo"] + b["hi"]):
        raise SpecError("bounds: lo and hi must be lists of numbers")
    try:
        lo, hi = [float(v) for v in b["lo"]], [float(v) for v in b["hi"]]
    except (TypeError, ValueError, OverflowError):
        raise SpecError("bounds: lo and hi must be lists of numbers") from None
    if not lo or len(lo) != len(hi) or any(h < l for l, h in zip(lo, hi)) or \
            not all(map(math.isfinite, lo + hi)) or max(h - l for l, h in zip(lo, hi)) <= 0:
        raise SpecError("bounds: lo and hi need equal lengths, finite values, hi >= lo")
    if any(abs(v) > MAX_ABS_BOUND for v in lo + hi):
        raise SpecError(f"bounds: values must lie within +-{MAX_ABS_BOUND:g}")
    reveal = d.get("reveal_to", [r.id for r in refs])
    if not isinstance(reveal, list) or not reveal or not all(isinstance(r, str) for r in reveal):
        raise SpecError("reveal_to: a non-empty list of party ids or analyst identities")
    if len(reveal) > MAX_REVEAL_TO or len(set(reveal)) != len(reveal):
        raise SpecError(f"reveal_to: at most {MAX_REVEAL_TO} distinct receivers")
    for r in reveal:
        if ":" in r and not (r.startswith("analyst:") and NAME_RE.fullmatch(r[8:])):
            raise SpecError(f"reveal_to: {r[:80]!r} is neither a job party nor "
                            "'analyst:<name>'")
        if ":" not in r and r not in {x.id for x in refs}:
            raise SpecError(f"reveal_to: {r[:80]!r} is not a party of this job")
    summary = d.get("summary", "auto")
    if not isinstance(summary, (str, int, float)) or isinstance(summary, bool):
        raise SpecError("summary: 'exact', 'auto' or a cell size in (0, 2] bandwidths")
    summary = str(summary)
    if summary not in ("exact", "auto"):
        try:
            s = float(summary)
            assert 0 < s <= 2
        except (ValueError, AssertionError, OverflowError):
            raise SpecError("summary: 'exact', 'auto' or a cell size in (0, 2] bandwidths") \
                from None
    merge = d.get("merge") or "intensity"
    if merge not in MERGE_RULES:
        raise SpecError(f"merge: must be one of {', '.join(MERGE_RULES)}")
    seeding = d.get("seeding") or "auto"
    if seeding not in SEEDINGS:
        raise SpecError(f"seeding: must be one of {', '.join(SEEDINGS)}")
    auto = d.get("bandwidth") == "auto"
    quantile = _num(d, "quantile", 0.3, positive=True)
    if quantile > 1:
        raise SpecError("quantile: must be in (0, 1]")
    for flag in ("oblivious", "return_sizes"):
        if not isinstance(d.get(flag, False), bool):
            raise SpecError(f"{flag}: must be true or false")
    provider = d.get("provider", "dealer")
    if str(provider).lower() in FIRST_PARTY:
        raise SpecError("provider: the service refuses the trusted-first-party provider "
                        "(a party would deal the randomness and could read every share); "
                        "name a dealer instead")
    if provider != "dealer":
        raise SpecError("provider: only 'dealer' is available")
    dealer = d.get("dealer")
    if not isinstance(dealer, str) or not NAME_RE.fullmatch(dealer):
        raise SpecError("dealer: required: the name of a dealer node (its certificate is "
                        "'dealer:<name>'); it makes the correlated randomness and holds no data")
    transport = d.get("transport", "tls")
    if transport not in TRANSPORTS:
        raise SpecError(f"transport: must be one of {', '.join(TRANSPORTS)}")
    privacy = _privacy(d.get("privacy"), auto, seeding)
    name = d.get("name", "")
    if not isinstance(name, (str, int, float)) or len(str(name)) > 128:
        raise SpecError("name: a string of at most 128 characters")
    spec = pb.JobSpec(
        parties=refs, bandwidth=0.0 if auto else _num(d, "bandwidth", positive=True),
        n_dust=_num(d, "dust", 8, positive=True, integer=True, maximum=MAX_DUST), kernel=kernel,
        max_iter=_num(d, "max_iter", 30, positive=True, integer=True, maximum=MAX_ITER),
        tol=_num(d, "tol", 0.0), oblivious=bool(d.get("oblivious", False)),
        bounds_lo=lo, bounds_hi=hi, reveal_to=reveal,
        merge_radius=_num(d, "merge_radius", 0.0), return_sizes=bool(d.get("return_sizes", False)),
        summary=summary, name=str(name), dealer=dealer, transport=transport,
        min_cluster_size=_num(d, "min_cluster_size", DEFAULT_MIN_CLUSTER_SIZE, positive=True,
                              integer=True, maximum=1_000_000_000),
        merge=merge, seeding=seeding,
        seeds_per_party=_num(d, "seeds_per_party", 32, positive=True, integer=True,
                             maximum=MAX_DUST),
        bandwidth_auto=auto, quantile=quantile, min_weight=_num(d, "min_weight", 0.0),
        privacy_epsilon=privacy.epsilon if privacy else 0.0,
        privacy_delta=privacy.delta if privacy else 0.0)
    if spec.min_weight < 0:
        raise SpecError("min_weight: must be >= 0")
    span = max(h - l for l, h in zip(lo, hi))
    if spec.bandwidth / span > math.sqrt(len(lo)):
        raise SpecError("bandwidth: is larger than the whole bounded domain")
    if not spec.bandwidth_auto and spec.bandwidth / span < MIN_BANDWIDTH_FRACTION:
        raise SpecError(f"bandwidth: smaller than {MIN_BANDWIDTH_FRACTION:g} of the bounds' "
                        "largest span")
    if spec.max_iter > 10_000:
        raise SpecError("max_iter: at most 10000")
    if spec.tol < 0:
        raise SpecError("tol: must be >= 0")
    if spec.merge_radius < 0:
        raise SpecError("merge_radius: must be >= 0")
    if spec.merge_radius > span * math.sqrt(len(lo)) or spec.tol > span * math.sqrt(len(lo)):
        raise SpecError(("merge_radius" if spec.merge_radius > span * math.sqrt(len(lo))
                         else "tol") + ": larger than the whole bounded domain")
    if privacy is not None:
        _check_dp_grid(spec)
    return spec


def _privacy(value, bandwidth_auto: bool, seeding: str):
    """The ``privacy`` field: null/absent (exact results) or {epsilon, delta}."""
    if value is None:
        if seeding == "grid":
            raise SpecError("seeding: 'grid' is the seeding of DP mode (set privacy)")
        return None
    if not isinstance(value, dict) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value.values()):
        raise SpecError("privacy: expected {epsilon: <number>, delta: <number>} or null")
    try:
        spec = PrivacySpec.coerce(value)
    except InputError as exc:
        raise SpecError(str(exc)) from None
    if bandwidth_auto:
        raise SpecError("bandwidth: 'auto' is refused with privacy (the estimate would "
                        "reveal a value computed from the data); give a number")
    if seeding not in ("auto", "grid"):
        raise SpecError(f"seeding: with privacy only 'grid' (or 'auto') is allowed; "
                        f"'{seeding}' would depend on the data")
    return spec


def _check_dp_grid(spec: pb.JobSpec) -> None:
    """The DP grid's limits (cells, features), as the engine checks them."""
    from secure_meanshift.params import MeanShiftParams

    try:
        MeanShiftParams(**engine_params(spec, 0))
    except InputError as exc:
        raise SpecError(str(exc)) from None


def privacy_of(spec: pb.JobSpec):
    """The job's PrivacySpec, or None for an exact (non-DP) job."""
    if spec.privacy_epsilon <= 0:
        return None
    return PrivacySpec(spec.privacy_epsilon, spec.privacy_delta)


def to_dict(spec: pb.JobSpec) -> dict[str, Any]:
    return {"name": spec.name, "parties": [{"id": p.id, "dataset": p.dataset}
                                           for p in spec.parties],
            "bandwidth": "auto" if spec.bandwidth_auto else spec.bandwidth,
            "dust": spec.n_dust, "kernel": spec.kernel,
            "max_iter": spec.max_iter, "tol": spec.tol or None, "oblivious": spec.oblivious,
            "bounds": {"lo": list(spec.bounds_lo), "hi": list(spec.bounds_hi)},
            "reveal_to": list(spec.reveal_to), "merge_radius": spec.merge_radius or None,
            "return_sizes": spec.return_sizes, "summary": spec.summary,
            "min_cluster_size": spec.min_cluster_size,
            "dealer": spec.dealer, "transport": spec.transport or "tls",
            "merge": spec.merge or "intensity", "seeding": spec.seeding or "auto",
            "seeds_per_party": spec.seeds_per_party or 32, "quantile": spec.quantile or 0.3,
            "min_weight": spec.min_weight,
            "privacy": None if privacy_of(spec) is None else privacy_of(spec).to_dict()}


def engine_params(spec: pb.JobSpec, seed: int, receivers: Any = None) -> dict:
    """The one place a job spec becomes the engine's parameters (a dict of
    MeanShiftParams keyword arguments, JSON-safe for the worker). ``receivers``:
    the ranks that get the centroids; default: the parties in reveal_to (with
    analyst receivers every party also exports its share: ``export_shares``). With
    ``bandwidth: auto`` the bandwidth is "auto" and ``quantile`` is added (the
    worker estimates h under MPC first: bandwidth.run_party_auto)."""
    ids = [p.id for p in spec.parties]
    if receivers is None:
        receivers = sorted({ids.index(r) for r in spec.reveal_to if r in ids})
    auto = {"quantile": spec.quantile or 0.3} if spec.bandwidth_auto else {}
    return {**auto, "bandwidth": "auto" if spec.bandwidth_auto else spec.bandwidth,
            "bounds": [list(spec.bounds_lo), list(spec.bounds_hi)],
            "n_dust": spec.n_dust, "kernel": spec.kernel, "max_iter": spec.max_iter,
            "tol": spec.tol or None, "oblivious": spec.oblivious, "seed": int(seed),
            "merge_radius": spec.merge_radius or None,
            "reveal_to": list(receivers), "return_sizes": spec.return_sizes,
            # analyst receivers: no rank opens, every party exports its share
            "export_shares": any(r.startswith("analyst:") for r in spec.reveal_to),
            "summary": "auto" if spec.summary == "auto" else
            (None if spec.summary == "exact" else float(spec.summary)),
            "min_cluster_size": spec.min_cluster_size or 1,
            "merge": spec.merge or "intensity", "seeding": spec.seeding or "auto",
            "seeds_per_party": spec.seeds_per_party or 32, "min_weight": spec.min_weight,
            "privacy": None if privacy_of(spec) is None else privacy_of(spec).to_dict()}


def to_yaml(spec: pb.JobSpec) -> str:
    return yaml.safe_dump(to_dict(spec), sort_keys=False)
