"""The node's YAML config: who it is, where its data is, whom it trusts, what it allows.

    party_id: hospital-a
    coordinator: {address: "coord.example.org:50051"}   # server_name: accepted, ignored
    tls: {ca: certs/ca.pem, cert: certs/party_hospital-a.pem, key: certs/party_hospital-a.key}
    # insecure: true          # local experiments only: no TLS at all
    datasets:                 # docs/operating.md "Data sources": CSV, .npy, Parquet, SQL
      patients: {path: data/patients.csv, columns: [age, bmi]}
      # visits: {sql: "SELECT age, bmi FROM visits", url: "postgresql+psycopg://app@db/clinic",
      #          password_file: secrets/db-password}
      # tx: {path: "lake/tx/*.parquet", columns: [amount, hour], summary_engine: dask,
      #      dask_scheduler: "tcp://10.0.0.9:8786"}
      # per data set: privacy_budget: {epsilon: 1.0, delta: 1.0e-6}  (else the policy's)
    rendezvous:               # where this node's MPC worker listens (one port per job)
      advertise: 10.0.0.5     # address the other ranks' workers dial (TLS, pinned identity)
      # ifname: eth0          # without advertise: advertise this interface's IPv4 address
      port_range: [29500, 29599]   # the one inbound range to open in the firewall
    policy:
      kernels: [flat, gaussian]
      min_parties: 2
      allowed_submitters: ["*"]          # identities, or "*"
      allowed_receivers: ["*"]           # party ids / analyst identities, or "*"
      trusted_dealers: [dealer-1]        # dealers this party trusts not to collude
                                         # (default: none, so every job is refused)
      allow_exact_results: false         # true: also accept exact (non-DP) jobs; two
                                         # legal exact jobs differenced reveal a record
      privacy_budget: {epsilon: 3.0, delta: 1.0e-5}   # per data set, over all DP jobs
      allow_plaintext_mpc: false         # true: accept transport "trusted-network"
      allow_scaling: true                # false: refuse jobs with scale: standard (they
                                         # open the pooled mean and std of every feature)
      min_bandwidth_fraction: 0.01       # bandwidth >= this x the bounds' largest span
      max_dust: 1000                     # initial centroids (dusts, binned modes, every point)
      max_iter: 1000
      min_cluster_size: 5                # jobs must suppress clusters smaller than this
    revocation_list: revoked.txt         # optional: certificate serials (hex), one a line
    results_dir: results
    mpc_timeout_s: 30
    status_file: node-status.json   # touched on every heartbeat (container health checks)
    prewarm_worker: true      # start the next job's (fresh) worker ahead of time: torch and
                              # CrypTen load while idle (~1.5 s less per job, ~250 MB idle)
    max_concurrent_jobs: 1    # jobs run at once, each its own worker and port from
                              # port_range (the coordinator schedules within it)

A dealer node uses the same file with ``dealer_id: <name>`` instead of
``party_id`` and no ``datasets``; it holds no data.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Optional

import yaml

from meanshift_rpc.tls import TLSFiles
from secure_meanshift.errors import InputError

from .state import Budget
from secure_meanshift.kernels import KERNEL_NAMES
from secure_meanshift.sources import Source, parse_source, source_for_path


class ConfigError(ValueError):
    pass


MAX_CONCURRENT_JOBS = 64        # the coordinator caps an announced limit at this too
DEFAULT_BUDGET = Budget(epsilon=3.0, delta=1e-5)   # per data set, unless configured


@dataclass
class Dataset:
    """One data set: ``path`` (a file, directory or glob; "" for SQL), ``columns``,
    and the full description (secure_meanshift.sources.Source)."""

    path: str
    columns: Optional[list] = None
    source: Optional[Source] = None
    privacy_budget: Optional[Budget] = None    # None: the policy's

    def __post_init__(self) -> None:
        if self.source is None:          # built in code from a path (tests, tools)
            self.source = source_for_path("", self.path, self.columns)


def _budget(where: str, d) -> Budget:
    """A privacy budget from {epsilon, delta}: epsilon > 0, 0 < delta < 1."""
    if not isinstance(d, dict) or set(map(str, d)) != {"epsilon", "delta"}:
        raise ConfigError(f"{where}: a mapping with exactly epsilon and delta")
    eps, delta = d["epsilon"], d["delta"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1e6:
        raise ConfigError(f"{where}.epsilon: a number > 0")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise ConfigError(f"{where}.delta: a number in (0, 1)")
    return Budget(float(eps), float(delta))


@dataclass
class Policy:
    kernels: list = field(default_factory=lambda: list(KERNEL_NAMES))
    min_parties: int = 2
    allowed_submitters: list = field(default_factory=lambda: ["*"])
    allowed_receivers: list = field(default_factory=lambda: ["*"])
    trusted_dealers: list = field(default_factory=list)
    allow_plaintext_mpc: bool = False
    allow_exact_results: bool = False
    allow_scaling: bool = True        # scale: standard opens the pooled moments
    privacy_budget: Budget = DEFAULT_BUDGET
    min_bandwidth_fraction: float = 0.01
    max_dust: int = 1000         # initial centroids of any seeding (auto: every point to 1,000)
    max_iter: int = 1000
    min_cluster_size: int = 5


@dataclass
class NodeConfig:
    party_id: str
    coordinator: str
    datasets: dict
    tls: Optional[TLSFiles] = None
    server_name: Optional[str] = None
    advertise: str = "127.0.0.1"
    port_range: tuple = (29500, 29599)
    policy: Policy = field(default_factory=Policy)
    results_dir: str = "results"
    mpc_timeout_s: float = 30.0
    status_file: str = "node-status.json"
    prewarm_worker: bool = True
    role: str = "party"                # "party" | "dealer"
    revocation_list: Optional[str] = None
    max_concurrent_jobs: int = 1

    @property
    def identity(self) -> str:
        return f"{self.role}:{self.party_id}"

    def budget(self, dataset: str) -> Budget:
        """The privacy budget of one data set: its own, else the policy's."""
        ds = self.datasets.get(dataset)
        own = ds.privacy_budget if ds is not None else None
        return own or self.policy.privacy_budget


KNOWN = {
    "": {"party_id", "dealer_id", "coordinator", "tls", "insecure", "datasets", "rendezvous",
         "policy", "results_dir", "mpc_timeout_s", "status_file", "prewarm_worker",
         "revocation_list", "max_concurrent_jobs"},
    "coordinator": {"address", "server_name"},
    "tls": {"ca", "cert", "key"},
    "rendezvous": {"advertise", "port_range", "ifname"},
    "policy": {"kernels", "min_parties", "allowed_submitters", "allowed_receivers",
               "trusted_dealers", "allow_plaintext_mpc", "allow_exact_results",
               "allow_scaling", "privacy_budget",
               "min_bandwidth_fraction", "max_dust", "max_iter", "min_cluster_size"},
}


def write_node_config(path: str, node_id: str, coordinator: str, *,
                      advertise: Optional[str] = None, port_range: Optional[tuple] = None,
                      certs: str = "", dealer: bool = False,
                      datasets: Optional[dict] = None, policy: Optional[dict] = None,
                      server_name: Optional[str] = None, header: str = "",
                      **settings) -> str:
    """Write a node config that :func:`load` reads: a party's, or with
    ``dealer`` a dealer's (no data). ``advertise``, ``port_range``: the
    rendezvous (None: the format's default); ``certs``: the folder of the TLS
    files as make_dev_pki names them ("": next to the config, by relative name);
    ``datasets``: {name: path, or the data set's whole entry}; ``settings``:
    any other top-level key of the format (results_dir, mpc_timeout_s,
    status_file, tls to override the files, ...); ``header``: comment lines
    written first. Returns ``path``."""
    unknown = sorted(set(settings) - KNOWN[""])
    if unknown:
        raise ConfigError(f"{unknown[0]}: not a node setting")
    role = "dealer" if dealer else "party"
    stem = os.path.join(certs, f"{role}_{node_id}")
    coord = {"address": coordinator}
    if server_name is not None:
        coord["server_name"] = server_name
    cfg = {f"{role}_id": node_id, "coordinator": coord,
           "tls": {"ca": os.path.join(certs, "ca.pem"), "cert": stem + ".pem",
                   "key": stem + ".key"}}
    rendezvous = {"advertise": advertise,
                  "port_range": None if port_range is None else list(port_range)}
    if any(v is not None for v in rendezvous.values()):
        cfg["rendezvous"] = {k: v for k, v in rendezvous.items() if v is not None}
    if datasets or not dealer:
        cfg["datasets"] = {name: p if isinstance(p, dict) else {"path": p}
                           for name, p in (datasets or {}).items()}
    if policy:
        cfg["policy"] = dict(policy)
    cfg.update(settings)
    with open(path, "w") as fh:
        fh.write(header)
        yaml.safe_dump(cfg, fh, sort_keys=False)
    return path


SIOCGIFADDR = 0x8915          # Linux: an interface's (first) IPv4 address
IFNAMSIZ = 16


def interface_ipv4(ifname: str) -> str:
    """The IPv4 address of the network interface ``ifname`` (Linux); OSError if there
    is no such interface or it has no IPv4 address."""
    name = ifname.encode()
    if not sys.platform.startswith("linux"):
        raise OSError("reading an interface's address is supported on Linux only")
    if not name or len(name) >= IFNAMSIZ or b"\0" in name:
        raise OSError("not a valid interface name")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name))
    return socket.inet_ntoa(ifreq[20:24])        # ifr_addr: a sockaddr_in after the name


def _advertise(path: str, rv: dict) -> str:
    """rendezvous.advertise if given, else the IPv4 address of rendezvous.ifname if
    given, else loopback."""
    if "advertise" in rv or rv.get("ifname") is None:
        return str(rv.get("advertise", "127.0.0.1"))
    ifname = rv["ifname"]
    if not isinstance(ifname, str):
        raise ConfigError(f"{path}: rendezvous.ifname: an interface name (a string)")
    try:
        return interface_ipv4(ifname)
    except OSError as exc:
        why = {errno.ENODEV: "no such network interface",
               errno.EADDRNOTAVAIL: "the interface has no IPv4 address"}.get(
                   exc.errno, exc.strerror or str(exc))
        raise ConfigError(f"{path}: rendezvous.ifname: {ifname!r}: {why} (or set "
                          "rendezvous.advertise)") from None


def _check_keys(path: str, d: dict) -> None:
    """A misspelt key is an error, never silently the (permissive) default."""
    for section, keys in KNOWN.items():
        sub = d if not section else d.get(section)
        if not isinstance(sub, dict):
            if section and sub is not None:
                raise ConfigError(f"{path}: {section}: expected a mapping")
            continue
        unknown = sorted(set(map(str, sub)) - keys)
        if unknown:
            where = f"{section}.{unknown[0]}" if section else unknown[0]
            raise ConfigError(f"{path}: {where}: unknown setting (known: "
                              f"{', '.join(sorted(keys))})")


def load(path: str) -> NodeConfig:
    try:
        cfg = _load(path)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ConfigError(f"{path}: a setting has the wrong type or shape "
                          f"({type(exc).__name__}: {exc})") from None
    pol = cfg.policy
    if not (isinstance(pol.kernels, list) and isinstance(pol.allowed_submitters, list)
            and isinstance(pol.allowed_receivers, list) and isinstance(pol.min_parties, int)
            and isinstance(pol.trusted_dealers, list)
            and isinstance(pol.allow_plaintext_mpc, bool)
            and isinstance(pol.allow_exact_results, bool)
            and isinstance(pol.allow_scaling, bool)):
        raise ConfigError(f"{path}: policy: kernels, allowed_submitters, allowed_receivers "
                          "and trusted_dealers are lists, min_parties an integer, "
                          "allow_plaintext_mpc, allow_exact_results and allow_scaling true "
                          "or false")
    for key in ("max_dust", "max_iter", "min_cluster_size"):
        v = getattr(pol, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{path}: policy.{key}: an integer >= 1")
    f = pol.min_bandwidth_fraction
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
        raise ConfigError(f"{path}: policy.min_bandwidth_fraction: a number in [0, 1)")
    lo, hi = cfg.port_range
    if not 1 <= lo <= hi <= 65535:
        raise ConfigError(f"{path}: rendezvous.port_range: need 1 <= low <= high <= 65535")
    m = cfg.max_concurrent_jobs
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= MAX_CONCURRENT_JOBS:
        raise ConfigError(f"{path}: max_concurrent_jobs: an integer from 1 to "
                          f"{MAX_CONCURRENT_JOBS}")
    if m > hi - lo + 1:
        raise ConfigError(f"{path}: max_concurrent_jobs: {m} jobs need {m} ports, "
                          f"rendezvous.port_range has {hi - lo + 1}")
    return cfg


def _datasets(path: str, base: str, entries: dict) -> dict:
    """{name: Dataset} from the config's ``datasets`` section (sources.parse_source)."""
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: datasets: expected a mapping of data set names")
    sets = {}
    for name, ds in entries.items():
        if not isinstance(ds, dict) or not ("path" in ds or "sql" in ds):
            raise ConfigError(f"{path}: datasets.{name}: needs a 'path' (or an 'sql' query "
                              "with a 'url')")
        own = ds.get("privacy_budget")      # the node's setting, not the source's
        try:
            src = parse_source(str(name), {k: v for k, v in ds.items()
                                           if k != "privacy_budget"}, base)
        except InputError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        sets[str(name)] = Dataset(
            src.path, list(src.columns) if src.columns else None, src,
            None if own is None else _budget(f"{path}: datasets.{name}.privacy_budget", own))
    return sets


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the
    last silently: a duplicated section would drop the settings above it)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            m = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", m)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def parse_yaml(text: str, path: str):
    """The YAML document in ``text``; a ConfigError naming the line and column of
    the first problem (bad syntax, a key given twice) otherwise."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        where = f"line {m.line + 1}, column {m.column + 1}: " if m else ""
        what = exc.problem or exc.context or "not valid YAML"
        raise ConfigError(f"{path}: {where}not valid YAML ({what})") from None
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None


def _load(path: str) -> NodeConfig:
    if not os.path.exists(path):
        raise ConfigError(f"config file {path} does not exist")
    with open(path) as fh:
        d = parse_yaml(fh.read(), path) or {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    _check_keys(path, d)
    base = os.path.dirname(os.path.abspath(path))

    def rel(p):
        return p if os.path.isabs(p) else os.path.join(base, p)

    def need(key):
        if key not in d:
            raise ConfigError(f"{path}: '{key}' is required")
        return d[key]

    coord = need("coordinator")
    if not isinstance(coord, dict) or "address" not in coord:
        raise ConfigError(f"{path}: coordinator: needs an 'address'")
    if ("party_id" in d) == ("dealer_id" in d):
        raise ConfigError(f"{path}: exactly one of 'party_id' (a party node) and "
                          "'dealer_id' (a dealer node) is required")
    role = "dealer" if "dealer_id" in d else "party"
    sets = _datasets(path, base, (need("datasets") if role == "party"
                                  else d.get("datasets")) or {})
    tls = None
    if not d.get("insecure", False):
        t = need("tls")
        try:
            tls = TLSFiles(rel(t["ca"]), rel(t["cert"]), rel(t["key"]))
        except (KeyError, TypeError):
            raise ConfigError(f"{path}: tls: needs ca, cert and key (or insecure: true)") \
                from None
    rv = d.get("rendezvous", {}) or {}
    pr = rv.get("port_range", [29500, 29599])
    pol = dict(d.get("policy", {}) or {})
    if "privacy_budget" in pol:
        pol["privacy_budget"] = _budget(f"{path}: policy.privacy_budget", pol["privacy_budget"])
    return NodeConfig(
        party_id=str(d.get("party_id", d.get("dealer_id"))), role=role,
        coordinator=str(coord["address"]), datasets=sets,
        tls=tls, server_name=coord.get("server_name"),
        advertise=_advertise(path, rv), port_range=(int(pr[0]), int(pr[1])),
        policy=Policy(**{k: pol[k] for k in KNOWN["policy"] if k in pol}),
        revocation_list=rel(d["revocation_list"]) if d.get("revocation_list") else None,
        results_dir=rel(d.get("results_dir", "results")),
        status_file=rel(d.get("status_file", "node-status.json")),
        mpc_timeout_s=float(d.get("mpc_timeout_s", 30)),
        prewarm_worker=bool(d.get("prewarm_worker", True)),
        max_concurrent_jobs=d.get("max_concurrent_jobs", 1))
