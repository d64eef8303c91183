"""secure-meanshift: secure multi-party mean-shift clustering.

  secure-meanshift demo                         coordinator + 3 nodes + a job, locally
  secure-meanshift simulate [...]               all parties as local processes (engine only)
  secure-meanshift coordinator serve [...]      run the coordinator
  secure-meanshift node run --config node.yaml  run a party node
  secure-meanshift node budget --config node.yaml   privacy budget spent per data set and job
  secure-meanshift dealer run --config d.yaml   run a dealer (correlated randomness, no data)
  secure-meanshift job submit job.yaml --wait   submit a job and follow it
  secure-meanshift job status|watch|result|cancel JOB_ID,  job list,  parties
  secure-meanshift dashboard [--port 0]         live read-only view in a local browser
  secure-meanshift certs --out DIR ...          development CA and certificates
  secure-meanshift certs ca --out DIR           only a CA (ca.pem, ca.key)
  secure-meanshift certs request --identity party:x --out DIR   own key + CSR
  secure-meanshift certs sign --ca-dir DIR --csr X.csr --out X.pem   the CA signs a CSR
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time

from party_node.state import NodeState, spent, state_path

from .probe import node_health
from .watch import follow

# Each command imports the rest of what it needs inside its function: the
# engine (torch) and grpc load only for the commands that use them, so that
# `job list`, `job cancel` and the health probes start at once
# (tests/test_probe.py).

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_DENIED = 0, 1, 2, 3, 4


def _client_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("connection")
    g.add_argument("--coordinator", default=os.environ.get("SMS_COORDINATOR", "localhost:50051"),
                   help="coordinator address (env SMS_COORDINATOR)")
    g.add_argument("--tls-dir", default=os.environ.get("SMS_TLS_DIR"),
                   help="folder with ca.pem and <identity>.pem/.key (env SMS_TLS_DIR)")
    g.add_argument("--identity", default=os.environ.get("SMS_IDENTITY", ""),
                   help="who you are, e.g. analyst:alice (env SMS_IDENTITY)")
    g.add_argument("--server-name", help="accepted and ignored: the coordinator is verified "
                   "under the name 'coordinator' whatever its address (SECURITY.md)")
    g.add_argument("--insecure", action="store_true",
                   help="plaintext gRPC, identity sent as a header (local experiments only)")
    g.add_argument("--format", choices=["text", "json"], default="text")


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The whole command line; ``argv`` (default: sys.argv) decides only which
    optional parts load (the engine for ``simulate`` and ``demo``)."""
    ap = argparse.ArgumentParser(prog="secure-meanshift", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    words = sys.argv[1:] if argv is None else list(argv)
    _simulate_parser(sub, words)
    _demo_parser(sub, words)
    serve = _coordinator_parsers(sub)
    nrun, drun = _node_parsers(sub)
    for daemon in (serve, nrun, drun):
        daemon.add_argument("--format", choices=["text", "json"], default="text",
                            help="log format on stderr (json: one object per line)")
    _client_parsers(sub)
    _init_parser(sub)
    _certs_parser(sub)
    return ap


def _simulate_parser(sub, words: list) -> None:
    """`simulate`: its flags come from the engine's parameter table
    (meanshift_cli/simulate.py), loaded only when this subcommand runs."""
    sim = sub.add_parser("simulate", help="run all parties locally (engine only)")
    if words[:1] == ["simulate"]:   # the engine (and torch) load only for this subcommand
        from .simulate import add_arguments

        add_arguments(sim)
    else:
        sim.add_argument("rest", nargs=argparse.REMAINDER)


def _demo_parser(sub, words: list) -> None:
    demo = sub.add_parser("demo", help="coordinator + 3 party nodes + one job, all local")
    demo.add_argument("--parties", type=int, default=3)
    demo.add_argument("--points", type=int, default=150, help="points per party")
    if words[:1] == ["demo"]:     # the kernel registry loads the engine (torch): demo only
        from secure_meanshift.kernels import DEFAULT_KERNEL, KERNEL_NAMES

        demo.add_argument("--kernel", choices=list(KERNEL_NAMES), default=DEFAULT_KERNEL)
    else:
        demo.add_argument("--kernel", help="flat (default) or gaussian")
    demo.add_argument("--bandwidth", type=float, default=0.1, help="data are in the unit box")
    demo.add_argument("--dust", type=int, default=24, help="dust points (initial centroids)")
    demo.add_argument("--plot", default="demo.png", help="PNG to write ('' for none)")
    demo.add_argument("--keep", help="keep certificates, data and logs in this folder")
    demo.add_argument("--format", choices=["text", "json"], default="text")


def _coordinator_parsers(sub) -> argparse.ArgumentParser:
    """coordinator serve|audit|health; returns serve's parser."""
    co = sub.add_parser("coordinator", help="the coordinator server")
    cosub = co.add_subparsers(dest="action", required=True)
    serve = cosub.add_parser("serve")
    serve.add_argument("--listen", default="0.0.0.0:50051")
    serve.add_argument("--db", default="coordinator.db", help="SQLite file with the job history")
    serve.add_argument("--tls-dir", help="folder with ca.pem, coordinator.pem, coordinator.key")
    serve.add_argument("--ca")
    serve.add_argument("--cert")
    serve.add_argument("--key")
    serve.add_argument("--insecure", action="store_true", help="no TLS (local experiments only)")
    serve.add_argument("--record", help="append every received message to this file (audit/tests)")
    serve.add_argument("--heartbeat-timeout", type=float, default=15.0)
    serve.add_argument("--agreement-timeout", type=float, default=30.0)
    serve.add_argument("--mpc-timeout", type=float, default=30.0,
                       help="seconds any MPC rendezvous or collective may take")
    serve.add_argument("--job-timeout", type=float, default=6 * 3600.0,
                       help="wall-clock limit of a running job, seconds")
    serve.add_argument("--revocation-list",
                       help="file of revoked certificate serials (hex, one a line)")
    serve.add_argument("--submitter", action="append", default=[],
                       help="role (analyst) or identity that may submit jobs (repeatable; "
                       "default: analyst and operator)")
    serve.add_argument("--max-streams-per-identity", type=int, default=16)
    serve.add_argument("--queue-timeout", type=float, default=3000.0,
                       help="a queued job fails after waiting this long (s), naming the party "
                            "it waits for")
    serve.add_argument("--max-queued-per-submitter", type=int, default=100,
                       help="queued jobs per submitter (0: no limit)")
    serve.add_argument("--max-jobs-per-hour", type=int, default=0,
                       help="jobs a submitter may submit per hour (0: no limit)")
    serve.add_argument("--audit-max-rows", type=int, default=100_000,
                       help="the audit table keeps this many newest rows (older ones are "
                       "deleted)")

    au = cosub.add_parser("audit", help="the audit log (submits, cancels, result fetches and "
                          "denials), read from the coordinator's SQLite file")
    au.add_argument("--db", default="coordinator.db")
    au.add_argument("--job", help="only this job")
    au.add_argument("--format", choices=["text", "json"], default="text")

    ch = cosub.add_parser("health", help="exit 0 if the coordinator answers SERVING")
    _client_args(ch)
    return serve


def _node_parsers(sub) -> tuple:
    """node run|health|budget, dealer run|health; returns the two run parsers."""
    node = sub.add_parser("node", help="a party node")
    nsub = node.add_subparsers(dest="action", required=True)
    nrun = nsub.add_parser("run")
    nrun.add_argument("--config", required=True, help="node YAML config")
    dealer = sub.add_parser("dealer", help="a dealer node: deals correlated randomness for "
                            "the jobs that name it, holds no data")
    dsub = dealer.add_subparsers(dest="action", required=True)
    drun = dsub.add_parser("run")
    drun.add_argument("--config", required=True,
                      help="dealer YAML config (as a node's, with dealer_id and no datasets)")
    dh = dsub.add_parser("health", help="exit 0 if the dealer heartbeated recently")
    dh.add_argument("--config", required=True)
    dh.add_argument("--max-age", type=float, default=20.0)
    nh = nsub.add_parser("health", help="exit 0 if the node heartbeated recently")
    nh.add_argument("--config", required=True)
    nh.add_argument("--max-age", type=float, default=20.0)
    nb = nsub.add_parser("budget", help="privacy budget per data set: spent per job, remaining")
    nb.add_argument("--config", required=True)
    nb.add_argument("--format", choices=["text", "json"], default="text")
    return nrun, drun


def _client_parsers(sub) -> None:
    """The commands that talk to the coordinator: job ..., parties, dashboard."""
    job = sub.add_parser("job", help="submit and follow jobs")
    jsub = job.add_subparsers(dest="action", required=True)
    s = jsub.add_parser("submit")
    s.add_argument("spec", help="job spec YAML file")
    s.add_argument("--wait", action="store_true", help="follow progress until the job ends")
    s.add_argument("--print-result", action="store_true",
                   help="with --wait: also fetch and print the centroids")
    _client_args(s)
    for name in ("status", "watch", "cancel"):
        p = jsub.add_parser(name)
        p.add_argument("job_id")
        _client_args(p)
    r = jsub.add_parser("result")
    r.add_argument("job_id")
    r.add_argument("--out", help="write the centroids as CSV")
    _client_args(r)
    lst = jsub.add_parser("list")
    lst.add_argument("--limit", type=int, default=20)
    _client_args(lst)

    parties = sub.add_parser("parties", help="parties known to the coordinator")
    _client_args(parties)

    dash = sub.add_parser("dashboard", help="a live read-only view of the federation in "
                          "your browser, served on 127.0.0.1 with your certificate")
    dash.add_argument("--port", type=int, default=0,
                      help="local port (default 0: a random free port, printed)")
    dash.add_argument("--refresh", type=float, default=5.0,
                      help="seconds between reads of the coordinator (each read adds one "
                      "'list' row to its audit log)")
    dash.add_argument("--jobs", type=int, default=50, help="newest jobs shown")
    _client_args(dash)


def _init_parser(sub) -> None:
    ini = sub.add_parser("init-cluster", help="certificates, demo data and configs for a "
                         "local federation (docker-compose's init service)")
    ini.add_argument("--out", required=True)
    ini.add_argument("--party", action="append", default=[], help="party id (repeatable)")
    ini.add_argument("--coordinator-host", default="coordinator")
    ini.add_argument("--points", type=int, default=150, help="synthetic points per party")
    ini.add_argument("--format", choices=["text", "json"], default="text")


def _certs_parser(sub) -> None:
    certs = sub.add_parser("certs", help="development CA and key/cert pairs; 'ca' for the "
                           "CA alone, 'request' and 'sign' for keys that never leave their owner")
    certs.add_argument("action", nargs="?", choices=["dev", "ca", "request", "sign"],
                       default="dev",
                       help="dev (default): a CA and every key in one folder; ca: only the CA "
                       "(ca.pem, ca.key); request: your own key and a CSR; sign: the CA signs a "
                       "CSR")
    certs.add_argument("--out", required=True,
                       help="dev/ca/request: folder; sign: the certificate file to write")
    certs.add_argument("--identity", help="request: e.g. party:hospital-a, analyst:alice")
    certs.add_argument("--ca-dir", help="sign: folder with ca.pem and ca.key")
    certs.add_argument("--csr", help="sign: the request to sign")
    certs.add_argument("--expect", help="sign: refuse unless the CSR is for this identity")
    certs.add_argument("--host", action="append", default=[],
                       help="sign, coordinator only: host names/addresses it serves on")
    certs.add_argument("--days", type=int, default=90,
                       help="dev/sign: days each certificate is valid, 1 to 3650 (default 90)")
    certs.add_argument("--coordinator-host", action="append", default=[],
                       help="dev: name or address clients use for the coordinator (repeatable)")
    certs.add_argument("--party", action="append", default=[],
                       help="dev: party id (repeatable)")
    certs.add_argument("--analyst", action="append", default=[],
                       help="dev: analyst name (repeatable)")
    certs.add_argument("--dealer", action="append", default=[],
                       help="dev: dealer name (repeatable)")
    certs.add_argument("--operator", action="append", default=[],
                       help="dev: operator name (repeatable): reads and cancels every job")
    certs.add_argument("--format", choices=["text", "json"], default="text",
                       help="text (default) or json")


def main(argv=None) -> int:
    """The CLI; output that stops being read (`job list | head`) ends it quietly."""
    try:
        rc = _main(argv)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        # the reader went away: nothing more to say, and no error at exit's flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv=None) -> int:
    args = build_parser(argv).parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    if getattr(args, "format", "text") == "json" and args.cmd in ("coordinator", "node",
                                                                  "dealer"):
        handler.setFormatter(_JSONLog())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        if args.cmd == "simulate":
            from .simulate import run as simulate    # the engine (torch): this command only

            return simulate(args)
        if args.cmd == "demo":
            from .demo import run_demo  # loads the engine (torch): only for this command
            return run_demo(args)
        if args.cmd == "coordinator" and args.action == "health":
            return _client_command(args)
        if args.cmd == "coordinator" and args.action == "audit":
            return _audit(args)
        if args.cmd in ("node", "dealer") and args.action == "health":
            return _node_health(args)
        if args.cmd == "node" and args.action == "budget":
            return _node_budget(args)
        if args.cmd == "dealer":
            return _node(args, role="dealer")
        if args.cmd == "coordinator":
            return _serve(args)
        if args.cmd == "node":
            return _node(args)
        if args.cmd == "certs":
            return _certs(args)
        if args.cmd == "init-cluster":
            from .cluster_init import init_cluster

            info = init_cluster(args.out, args.party or ["alpha", "beta", "gamma"],
                                args.coordinator_host, points=args.points)
            _out(args, f"wrote certificates, data and configs for {', '.join(info['parties'])} "
                 f"into {args.out}", info)
            return EXIT_OK
        return _client_command(args)
    except KeyboardInterrupt:
        return 130


class _JSONLog(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": record.created, "level": record.levelname,
                           "logger": record.name, "message": record.getMessage()})


def _out(args, text: str, data) -> None:
    if getattr(args, "format", "text") == "json":
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


def _serve(args) -> int:
    from coordinator.server import Limits, serve
    from meanshift_rpc.tls import TLSFiles

    from meanshift_rpc.signing import MAX_AGE_S, MAX_SKEW_S

    longest = MAX_AGE_S - MAX_SKEW_S     # nodes refuse a signed job older than MAX_AGE_S
    if not 0 < args.queue_timeout <= longest or args.max_queued_per_submitter < 0 or \
            args.max_jobs_per_hour < 0:
        print(f"error: --queue-timeout must be > 0 and at most {longest:.0f} s (a signed job "
              f"is valid for {MAX_AGE_S:.0f} s), --max-queued-per-submitter and "
              "--max-jobs-per-hour >= 0", file=sys.stderr)
        return EXIT_USAGE

    tls = None
    if not args.insecure:
        if args.tls_dir:
            tls = TLSFiles.in_dir(args.tls_dir, "coordinator")
        elif args.ca and args.cert and args.key:
            tls = TLSFiles(args.ca, args.cert, args.key)
        else:
            print("error: give --tls-dir (or --ca/--cert/--key), or --insecure", file=sys.stderr)
            return EXIT_USAGE
    from meanshift_rpc.tls import IdentityError

    try:
        server, svc = serve(args.listen, args.db, tls, insecure=args.insecure,
                            record_path=args.record, heartbeat_timeout=args.heartbeat_timeout,
                            agreement_timeout=args.agreement_timeout,
                            mpc_timeout=args.mpc_timeout, job_timeout=args.job_timeout,
                            revocation_list=args.revocation_list,
                            submitters=args.submitter or None,
                            max_streams_per_identity=args.max_streams_per_identity,
                            queue_timeout=args.queue_timeout,
                            limits=Limits(args.max_queued_per_submitter,
                                          args.max_jobs_per_hour),
                            audit_max_rows=args.audit_max_rows)
    except (OSError, FileNotFoundError, IdentityError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.getLogger("coordinator").info("listening on %s:%d (%s)",
                                          args.listen.rsplit(":", 1)[0], svc.port,
                                          "INSECURE" if args.insecure else "mutual TLS")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    done.wait()
    svc.stop()
    server.stop(grace=2).wait()
    return EXIT_OK


def _audit(args) -> int:
    if not os.path.exists(args.db):
        print(f"error: no coordinator database at {args.db}", file=sys.stderr)
        return EXIT_USAGE
    db = sqlite3.connect(f"file:{os.path.abspath(args.db)}?mode=ro", uri=True)
    try:
        q = "SELECT time, identity, action, job_id, outcome FROM audit"
        rows = db.execute(q + (" WHERE job_id=? ORDER BY rowid" if args.job else " ORDER BY rowid"),
                          (args.job,) if args.job else ()).fetchall()
    except sqlite3.Error as exc:
        print(f"error: cannot read the audit log: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.close()
    data = [dict(zip(("time", "identity", "action", "job_id", "outcome"), r)) for r in rows]
    _out(args, "\n".join(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r['time']))}  "
                         f"{r['identity']:<22} {r['action']:<7} {r['job_id'] or '-':<13} "
                         f"{r['outcome']}" for r in data) or "audit log is empty", data)
    return EXIT_OK


def _load_node_config(path: str):
    from party_node.config import ConfigError, load

    try:
        return load(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _node(args, role: str = "party") -> int:
    from party_node.datasets import check_all
    from party_node.startup import run_node

    cfg = _load_node_config(args.config)
    if cfg is None:
        return EXIT_USAGE
    if cfg.role != role:
        print(f"error: {args.config} configures a {cfg.role} node: use "
              f"'secure-meanshift {'node' if cfg.role == 'party' else 'dealer'} run'",
              file=sys.stderr)
        return EXIT_USAGE
    checked = check_all(cfg.datasets)        # every data set readable and numeric, or stop
    bad = [st for st in checked.values() if not st.available]
    for st in bad:
        print(f"error: {st.local}", file=sys.stderr)
    if bad:
        return EXIT_USAGE
    try:
        run_node(cfg, checked)
    except (PermissionError, FileNotFoundError) as exc:   # e.g. a key others can read
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _node_health(args) -> int:
    cfg = _load_node_config(args.config)
    if cfg is None:
        return EXIT_USAGE
    rc, out, err = node_health(cfg.status_file, args.max_age)
    for line in err:
        print(line, file=sys.stderr)
    for line in out:
        print(line)
    return rc


def _node_budget(args) -> int:
    """Each data set's privacy budget, its charges (job, time, epsilon, delta) and
    what remains, from the node's ledger (read only)."""
    cfg = _load_node_config(args.config)
    if cfg is None:
        return EXIT_USAGE
    path = state_path(cfg.results_dir)
    if not os.path.exists(path):
        data = {n: {"epsilon": cfg.budget(n).epsilon, "delta": cfg.budget(n).delta,
                    "spent_epsilon": 0.0, "jobs": []} for n in sorted(cfg.datasets)}
        _out(args, f"no privacy budget spent yet (no ledger at {path}); budgets: " +
             (", ".join(f"{n}: epsilon {d['epsilon']:g}, delta {d['delta']:g}"
                        for n, d in data.items()) or "no data sets"), data)
        return EXIT_OK
    from secure_meanshift.privacy import spent_epsilon

    st = NodeState(cfg.results_dir, create=False)
    try:
        charges = st.charges()
    finally:
        st.close()
    data, lines = {}, []
    for name in sorted(set(cfg.datasets) | {c.dataset for c in charges}):
        b = cfg.budget(name)
        mine = [c for c in charges if c.dataset == name]
        used = spent(mine, b, spent_epsilon)
        data[name] = {"epsilon": b.epsilon, "delta": b.delta, "spent_epsilon": used,
                      "remaining_epsilon": max(0.0, b.epsilon - used),
                      "jobs": [{"job_id": c.job_id, "time": c.time, "epsilon": c.epsilon,
                                "delta": c.delta} for c in mine]}
        lines.append(f"data set {name!r}: spent epsilon {used:.4g} of {b.epsilon:g} "
                     f"(delta {b.delta:g}), remaining {max(0.0, b.epsilon - used):.4g}, "
                     f"{len(mine)} job(s)")
        lines += [f"  {c.job_id}  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(c.time))}"
                  f"  epsilon {c.epsilon:g}  delta {c.delta:g}" for c in mine]
    _out(args, "\n".join(lines) or "no data sets", data)
    return EXIT_OK


def _certs(args) -> int:
    from meanshift_rpc.tls import IdentityError, make_dev_pki, make_request, role_of, sign_request

    if not 1 <= args.days <= 3650:
        print(f"error: --days must be 1 to 3650 (days the certificate is valid), not "
              f"{args.days}", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "ca":
        existed = os.path.exists(os.path.join(args.out, "ca.key"))
        make_dev_pki(args.out, [])
        ca = os.path.join(args.out, "ca.pem")
        _out(args, f"CA: {ca} and {os.path.join(args.out, 'ca.key')} (keep ca.key private)"
             + (" - existed already, kept" if existed else ""),
             {"ca": ca, "key": os.path.join(args.out, "ca.key"), "existed": existed})
        return EXIT_OK

    if args.action == "request":
        if not args.identity:
            print("error: certs request needs --identity (e.g. party:hospital-a)",
                  file=sys.stderr)
            return EXIT_USAGE
        try:
            key, csr = make_request(args.out, args.identity)
        except IdentityError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        _out(args, f"key: {key} (stays here, mode 0600)\nrequest: {csr} (send it to the CA)",
             {"key": key, "csr": csr})
        return EXIT_OK
    if args.action == "sign":
        if not (args.ca_dir and args.csr):
            print("error: certs sign needs --ca-dir and --csr", file=sys.stderr)
            return EXIT_USAGE
        try:
            with open(args.csr, "rb") as fh:
                pem = sign_request(args.ca_dir, fh.read(), args.host, args.days, args.expect)
        except (IdentityError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        with open(args.out, "wb") as fh:
            fh.write(pem)
        _out(args, f"certificate: {args.out}", {"cert": args.out})
        return EXIT_OK

    names = ["coordinator"] + [f"party:{p}" for p in args.party] + \
            [f"dealer:{d}" for d in args.dealer] + [f"analyst:{a}" for a in args.analyst] + \
            [f"operator:{o}" for o in args.operator]
    bad = [n for n in names if not role_of(n)]
    if bad:
        print(f"error: {bad[0]!r} is not a valid identity (names: letters, digits, '.', '_', "
              "'-')", file=sys.stderr)
        return EXIT_USAGE
    files = make_dev_pki(args.out, names, args.coordinator_host or ["localhost", "127.0.0.1"],
                         days=args.days)
    _out(args, "\n".join(f"{n}: {f.cert}, {f.key}" for n, f in files.items())
         + f"\nCA: {os.path.join(args.out, 'ca.pem')} (keep ca.key private)",
         {n: f.__dict__ for n, f in files.items()})
    return EXIT_OK


def _client_command(args) -> int:
    import grpc

    from coordinator.client import Client

    if not args.insecure and not (args.tls_dir and args.identity):
        print("error: give --tls-dir and --identity (or SMS_TLS_DIR and SMS_IDENTITY), "
              "or --insecure for a plaintext local coordinator", file=sys.stderr)
        return EXIT_USAGE
    try:
        c = Client(args.coordinator, tls_dir=args.tls_dir, identity=args.identity,
                   insecure=args.insecure, server_name=args.server_name)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _dispatch(c, args)
    except grpc.RpcError as exc:
        code = exc.code()
        print(f"error: {code.name}: {exc.details()}", file=sys.stderr)
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.FAILED_PRECONDITION):
            return EXIT_USAGE
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return EXIT_DENIED
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return _unreachable(args, exc.details() or "")
        return EXIT_JOB_FAILED
    except BrokenPipeError:        # our reader went away (main ends quietly)
        raise
    except (OSError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:       # noqa: BLE001 - only results.ResultError is handled here
        # (results loads the engine's registry: imported only by the commands that open a
        # result, so status, list and cancel start in a fraction of a second)
        results = sys.modules.get("meanshift_rpc.results")
        if results is None or not isinstance(exc, results.ResultError):
            raise
        print(f"error: result refused: {exc}", file=sys.stderr)  # never shown as centroids
        return EXIT_JOB_FAILED
    finally:
        c.close()


def _dashboard(c, args) -> int:
    """Serve the dashboard until interrupted (Ctrl-C or SIGTERM)."""
    from .dashboard import start

    if not 0 <= args.port < 65536 or args.refresh < 0.5 or args.jobs < 1:
        print("error: --port must be 0..65535, --refresh at least 0.5 s, --jobs at least 1",
              file=sys.stderr)
        return EXIT_USAGE
    httpd, url = start(c, port=args.port, refresh_s=args.refresh, jobs=args.jobs)
    print(f"dashboard for {c.identity}: {url}", flush=True)
    print("read only; stop with Ctrl-C", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    httpd.shutdown()
    return EXIT_OK


def _unreachable(args, detail: str) -> int:
    """Name why the coordinator did not answer: this client's own certificate
    (expired, not yet valid, another CA: exit 4) or the network/TLS (exit 3)."""
    from meanshift_rpc.tls import TLSFiles
    from party_node.connect import diagnose

    if args.insecure:
        return EXIT_UNREACHABLE
    files = TLSFiles.in_dir(args.tls_dir, args.identity)
    why = diagnose(args.coordinator, files, args.identity, args.server_name, detail,
                   whose="your")
    if why.startswith("the coordinator did not accept"):
        return EXIT_UNREACHABLE          # reachable and TLS fine: gRPC's detail was printed
    print(f"cause: {why}", file=sys.stderr)
    own = why.startswith(("expired:", "wrong role:")) or "your certificate" in why
    return EXIT_DENIED if own else EXIT_UNREACHABLE


def _job_line(j: dict) -> str:
    reason = f"  ({j['reason']})" if j.get("reason") else ""
    if j.get("queue_position"):
        reason = f"  (position {j['queue_position']} in the queue){reason}"
    return f"{j['job_id']}  {j['state']:<10} iterations={j.get('iterations', 0)}  " \
           f"parties={','.join(j.get('parties', []))}{reason}"


def _dispatch(c, args) -> int:
    if args.cmd == "coordinator":                       # health
        ok = c.healthy()
        print("SERVING" if ok else "NOT SERVING")
        return EXIT_OK if ok else EXIT_UNREACHABLE
    if args.cmd == "dashboard":
        return _dashboard(c, args)
    if args.cmd == "parties":
        ps = c.parties()
        _out(args, "\n".join(f"{p['id']:<20} {'connected' if p['connected'] else 'offline':<10}"
                             f" datasets={','.join(p.get('datasets', []))}"
                             f"{'  busy: ' + p['busy_job'] if p.get('busy_job') else ''}"
                             + "".join(f"\n{'':<20} unavailable: {d.get('problem') or d['name']}"
                                       for d in p.get('dataset_status', [])
                                       if not d.get('available'))
                             for p in ps) or "no parties", ps)
        return EXIT_OK
    a = args.action
    if a == "submit":
        with open(args.spec) as fh:
            info = c.submit(fh.read())
        if args.wait:
            info = follow(c, info["job_id"], json_mode=args.format == "json")
        text = _job_line(info)
        if args.wait and args.print_result and info["state"] == "succeeded":
            cents = c.result(info["job_id"])
            info["centroids"] = cents.tolist()
            text += "\n" + "\n".join("  ".join(f"{v: .6f}" for v in row) for row in cents)
        _out(args, text, info)
        return EXIT_OK if info["state"] in ("succeeded", "queued", "agreeing", "running") else \
            EXIT_JOB_FAILED
    if a == "status":
        info = c.status(args.job_id)
        _out(args, _job_line(info), info)
        return EXIT_OK
    if a == "watch":
        info = follow(c, args.job_id, json_mode=args.format == "json")
        _out(args, _job_line(info), info)
        return EXIT_OK if info["state"] == "succeeded" else EXIT_JOB_FAILED
    if a == "cancel":
        info = c.cancel(args.job_id)
        _out(args, _job_line(info), info)
        return EXIT_OK
    if a == "list":
        jobs = c.list(args.limit)
        _out(args, "\n".join(_job_line(j) for j in jobs) or "no jobs", jobs)
        return EXIT_OK
    if a == "result":
        import numpy as np  # only this command needs it (see the note at the imports)

        cents, columns = c.result_table(args.job_id)
        gone = getattr(c, "suppressed", 0) or 0
        if gone:
            print(f"({gone} centroid(s) suppressed: their clusters were smaller than the "
                  "job's min_cluster_size)", file=sys.stderr)
        if args.out:
            np.savetxt(args.out, cents, delimiter=",", comments="", header=",".join(columns))
        _out(args, "\n".join("  ".join(f"{v: .6f}" for v in row) for row in cents)
             + (f"\nwrote {args.out}" if args.out else ""),
             {"centroids": cents.tolist(), "columns": columns})
        return EXIT_OK
    raise AssertionError(a)


if __name__ == "__main__":
    sys.exit(main())
