"""The job spec: YAML an operator can read, the JobSpec message, and checks
that name the offending field.

The engine's parameters (their keys, checks and defaults) come from the one
parameter table, secure_meanshift.params.PARAMS (each row's ``spec_key``); this
module adds what only a job has: parties, dealer, transport, name, and the
service's hard limits.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

import yaml

from meanshift_proto.v1 import service_pb2 as pb

from secure_meanshift.kernels import KERNEL_NAMES as KERNELS  # noqa: F401 (re-exported: the one registry)
from secure_meanshift.errors import InputError
from secure_meanshift.params import (PARAMS, SCALE_DP_REFUSAL, EstimateBandwidth,
                                     MeanShiftParams, Param, bandwidth_value, default)
from secure_meanshift.privacy import PrivacySpec

# Hard limits every spec meets (the nodes' own policies are usually stricter).
MAX_SPEC_BYTES = 64 * 1024
MAX_PARTIES = 32
MAX_DIM = 64
MAX_DUST = 4096
MIN_BANDWIDTH_FRACTION = 1e-4      # of the bounds' largest span
MAX_ABS_BOUND = 1e12
MAX_REVEAL_TO = 64
# The service's own default: a job spec without min_cluster_size suppresses
# clusters of fewer than 5 points (the engine's default, PARAMS', is 1 = off).
DEFAULT_MIN_CLUSTER_SIZE = 5
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TRANSPORTS = ("tls", "trusted-network")
# names people use for "one of the computing parties deals": always refused
FIRST_PARTY = ("first-party", "tfp", "trusted-first-party", "trusted_first_party")

#: the table's rows a job spec carries, by spec key (bandwidth, bounds, reveal_to
#: and privacy are "custom": checked below)
ROWS: dict = {r.spec_key: r for r in PARAMS.values() if r.spec_key}
JOB_KEYS = ("name", "parties", "dealer", "transport", "provider")   # not engine parameters
SPEC_DEFAULTS = {"min_cluster_size": DEFAULT_MIN_CLUSTER_SIZE}
SPEC_MAXIMA = {"dust": MAX_DUST, "min_cluster_size": 1_000_000_000}
ZERO_IS_DEFAULT = ("tol", "merge_radius")   # the message's 0 means "derived from h"


class SpecError(ValueError):
    """Invalid job spec; the message starts with the field name."""


def parse(text: str) -> pb.JobSpec:
    """The checked JobSpec of a YAML job spec, or SpecError naming the field."""
    d = _load(text)
    unknown = sorted(map(str, set(d) - set(ROWS) - set(JOB_KEYS)))
    if unknown:
        raise SpecError(f"{unknown[0][:64]}: unknown field")
    refs = _parties(d.get("parties"))
    lo, hi = _bounds(d.get("bounds"))
    reveal = _reveal_to(d.get("reveal_to", [r.id for r in refs]), refs)
    values = {key: _field(d, row) for key, row in ROWS.items() if row.kind != "custom"}
    h = _bandwidth(d, values.pop("quantile"))
    estimate = isinstance(h, EstimateBandwidth)
    privacy = _privacy(d.get("privacy"), estimate, values["seeding"])
    if privacy is not None and values["scale"] == "standard":
        raise SpecError(SCALE_DP_REFUSAL)
    dealer, transport = _mpc_fields(d)
    name = d.get("name", "")
    if not isinstance(name, (str, int, float)) or len(str(name)) > 128:
        raise SpecError("name: a string of at most 128 characters")
    spec = pb.JobSpec(
        parties=refs, bounds_lo=lo, bounds_hi=hi, reveal_to=reveal, name=str(name),
        dealer=dealer, transport=transport,
        bandwidth=0.0 if estimate else h, bandwidth_auto=estimate,
        quantile=h.quantile if estimate else default("quantile"),
        **{ROWS[k].name: _to_message(ROWS[k], v) for k, v in values.items()},
        privacy_epsilon=privacy.epsilon if privacy else 0.0,
        privacy_delta=privacy.delta if privacy else 0.0)
    _check_lengths(spec, lo, hi)
    if privacy is not None:
        _check_dp_grid(spec)
    return spec


def _load(text: str) -> dict:
    """The YAML mapping of a spec (size and syntax checked)."""
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
    return d


def _field(d: dict, row: Param) -> Any:
    """One table parameter of the spec: absent or null is the default; checked
    by the table's rule, then the service's own limit."""
    key = row.spec_key
    v = d.get(key)
    if v is None or (key in ZERO_IS_DEFAULT and v == 0 and not isinstance(v, bool)):
        return SPEC_DEFAULTS.get(key, row.default)
    if row.kind == "summary" and isinstance(v, str) and v.strip().lower() != "auto":
        if v.strip().lower() == "exact":
            return None
        try:                    # to_yaml writes the message's text, e.g. '0.25'
            v = float(v)
        except ValueError:
            raise SpecError(f"summary: {row.rule()}") from None
    if row.kind in ("int", "float") and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise SpecError(f"{key}: must be a number")
    try:
        v = row.check(v, label=key)
    except InputError as exc:
        raise SpecError(str(exc)) from None
    if key in SPEC_MAXIMA and v > SPEC_MAXIMA[key]:
        raise SpecError(f"{key}: at most {SPEC_MAXIMA[key]}")
    return v


def _to_message(row: Param, v: Any) -> Any:
    """A checked value as the JobSpec message holds it (0 / "exact" = derived / exact)."""
    if row.kind == "summary":
        return "exact" if v is None else ("auto" if v == "auto" else f"{v:g}")
    return 0.0 if v is None else v


def _bandwidth(d: dict, quantile: float):
    """``bandwidth``: a positive number, or ``auto`` / ``{quantile: q}`` (estimated
    under MPC first; the top-level ``quantile`` key also sets q). Required."""
    v = d.get("bandwidth")
    if v is None:
        raise SpecError("bandwidth: required (a number in data units, or auto)")
    if isinstance(v, bool) or not isinstance(v, (int, float, str, dict)):
        raise SpecError("bandwidth: a positive number, 'auto' or {quantile: q}")
    if isinstance(v, str) and v.strip().lower() != "auto":
        raise SpecError("bandwidth: a positive number, 'auto' or {quantile: q}")
    if isinstance(v, dict) and set(map(str, v)) - {"quantile"}:
        raise SpecError("bandwidth: the estimate takes {quantile: q} only")
    try:
        h = bandwidth_value({"quantile": quantile, **v} if isinstance(v, dict) else v,
                            estimate=EstimateBandwidth(quantile=quantile))
    except InputError as exc:
        raise SpecError(str(exc)) from None
    return h if isinstance(h, EstimateBandwidth) else float(h)


def _parties(parties: Any) -> list:
    """``parties``: [{id, dataset}, ...], at least 2, ids unique."""
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
    return refs


def _bounds(b: Any) -> tuple:
    """``bounds: {lo: [..], hi: [..]}``: finite, hi >= lo, some hi > lo, within limits."""
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
    return lo, hi


def _reveal_to(reveal: Any, refs: list) -> list:
    """``reveal_to``: distinct job parties and/or ``analyst:<name>`` receivers."""
    if not isinstance(reveal, list) or not reveal or not all(isinstance(r, str) for r in reveal):
        raise SpecError("reveal_to: a non-empty list of party ids or analyst identities")
    if len(reveal) > MAX_REVEAL_TO or len(set(reveal)) != len(reveal):
        raise SpecError(f"reveal_to: at most {MAX_REVEAL_TO} distinct receivers")
    ids = {x.id for x in refs}
    for r in reveal:
        if ":" in r and not (r.startswith("analyst:") and NAME_RE.fullmatch(r[8:])):
            raise SpecError(f"reveal_to: {r[:80]!r} is neither a job party nor "
                            "'analyst:<name>'")
        if ":" not in r and r not in ids:
            raise SpecError(f"reveal_to: {r[:80]!r} is not a party of this job")
    return reveal


def _mpc_fields(d: dict) -> tuple:
    """(dealer, transport): a named dealer (never a party) and the links' kind."""
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
    return dealer, transport


def _check_lengths(spec: pb.JobSpec, lo: list, hi: list) -> None:
    """Lengths against the bounded domain (bandwidth, tol, merge_radius). With
    ``scale: standard`` the lengths are in standardised units and the bounds in
    data units: the engine checks them against the derived bounds once the
    pooled moments are known (moments.standardised_params)."""
    if spec.scaling == "standard":
        return
    span = max(h - l for l, h in zip(lo, hi))
    diameter = span * math.sqrt(len(lo))
    if spec.bandwidth > diameter:
        raise SpecError("bandwidth: is larger than the whole bounded domain")
    if not spec.bandwidth_auto and spec.bandwidth / span < MIN_BANDWIDTH_FRACTION:
        raise SpecError(f"bandwidth: smaller than {MIN_BANDWIDTH_FRACTION:g} of the bounds' "
                        "largest span")
    for key in ("merge_radius", "tol"):
        if getattr(spec, key) > diameter:
            raise SpecError(f"{key}: larger than the whole bounded domain")


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
    try:
        MeanShiftParams(**engine_params(spec, 0))
    except InputError as exc:
        raise SpecError(str(exc)) from None


def privacy_of(spec: pb.JobSpec):
    """The job's PrivacySpec, or None for an exact (non-DP) job."""
    if spec.privacy_epsilon <= 0:
        return None
    return PrivacySpec(spec.privacy_epsilon, spec.privacy_delta)


def _message_value(spec: pb.JobSpec, row: Param) -> Any:
    """A table parameter as the message holds it, unset (0 / "") read as the default."""
    v = getattr(spec, row.name)
    if row.spec_key in ZERO_IS_DEFAULT:
        return v or None
    if row.kind == "summary":
        return v or row.default
    return v if v or row.kind == "bool" or row.default in (0, 0.0) else row.default


def estimate_of(spec: pb.JobSpec) -> Optional[EstimateBandwidth]:
    """The job's EstimateBandwidth (``bandwidth: auto``), or None (a given bandwidth)."""
    if not spec.bandwidth_auto:
        return None
    return EstimateBandwidth(quantile=spec.quantile or default("quantile"))


def to_dict(spec: pb.JobSpec) -> dict[str, Any]:
    """The spec as YAML-ready fields (parse(to_yaml(spec)) == spec)."""
    how = estimate_of(spec)
    table = {key: _message_value(spec, row) for key, row in ROWS.items()
             if row.kind != "custom"}
    return {"name": spec.name,
            "parties": [{"id": p.id, "dataset": p.dataset} for p in spec.parties],
            "bandwidth": "auto" if how else spec.bandwidth,
            "bounds": {"lo": list(spec.bounds_lo), "hi": list(spec.bounds_hi)},
            "reveal_to": list(spec.reveal_to), **table,
            "quantile": how.quantile if how else table["quantile"],
            "dealer": spec.dealer, "transport": spec.transport or "tls",
            "privacy": None if privacy_of(spec) is None else privacy_of(spec).to_dict()}


def engine_params(spec: pb.JobSpec, seed: int, receivers: Any = None) -> dict:
    """The one place a job spec becomes the engine's parameters (a dict of
    MeanShiftParams keyword arguments, JSON-safe for the worker). ``receivers``:
    the ranks that get the centroids; default: the parties in reveal_to (with
    analyst receivers every party also exports its share: ``export_shares``). With
    ``bandwidth: auto`` the bandwidth is EstimateBandwidth's dict (the worker
    estimates h under MPC first: bandwidth.run_party_auto)."""
    ids = [p.id for p in spec.parties]
    if receivers is None:
        receivers = sorted({ids.index(r) for r in spec.reveal_to if r in ids})
    how = estimate_of(spec)
    table = {row.name: _message_value(spec, row) for row in ROWS.values()
             if row.kind != "custom" and row.name in MeanShiftParams.__dataclass_fields__}
    if table["summary"] == "exact":
        table["summary"] = None
    elif table["summary"] != "auto":
        table["summary"] = float(table["summary"])
    return {**table, "bandwidth": how.to_dict() if how else spec.bandwidth,
            "bounds": [list(spec.bounds_lo), list(spec.bounds_hi)], "seed": int(seed),
            "reveal_to": list(receivers),
            # analyst receivers: no rank opens, every party exports its share
            "export_shares": any(r.startswith("analyst:") for r in spec.reveal_to),
            "privacy": None if privacy_of(spec) is None else privacy_of(spec).to_dict()}


def to_yaml(spec: pb.JobSpec) -> str:
    """The spec as YAML an operator can read."""
    return yaml.safe_dump(to_dict(spec), sort_keys=False)
