"""Cheap health probes for container health checks: no engine, no torch.

    python -m meanshift_cli.probe node /party/node.yaml [--max-age 20]
    python -m meanshift_cli.probe coordinator localhost:50051 --tls-dir /certs \\
        --identity coordinator --server-name coordinator

`node` reads only the config's ``status_file`` (written by the node on every
heartbeat the coordinator acknowledges); `coordinator` asks the standard gRPC
health service over mutual TLS. Exit codes as `secure-meanshift node health` /
`coordinator health`: 0 healthy, 1 degraded (a data set unavailable), 2 bad
input, 3 unhealthy. `secure-meanshift node|dealer health` uses the same check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import yaml


def node_health(status_file: str, max_age: float) -> tuple[int, list, list]:
    """(exit code, stdout lines, stderr lines) from a node's status file."""
    try:
        age = time.time() - os.path.getmtime(status_file)
    except OSError:
        return 3, [], ["unhealthy: the node has not reached the coordinator yet"]
    if age > max_age:
        return 3, [], [f"unhealthy: last heartbeat {age:.0f} s ago"]
    try:
        with open(status_file) as fh:
            sets = json.load(fh).get("datasets") or {}
    except (OSError, ValueError, AttributeError):
        sets = {}
    bad = {n: d for n, d in sets.items() if isinstance(d, dict) and not d.get("available", True)}
    errs = [f"unavailable: {d.get('problem') or n}" for n, d in sorted(bad.items())]
    if bad:              # connected, but a job naming that data set would be refused
        return 1, [f"degraded: last heartbeat {age:.1f} s ago; {len(bad)} data set(s) "
                   "unavailable"], errs
    return 0, [f"healthy: last heartbeat {age:.1f} s ago"], []


def status_file_of(config: str) -> str:
    """The status_file a node config names (relative to the config's folder)."""
    with open(config) as fh:
        d = yaml.safe_load(fh) or {}
    path = str(d.get("status_file") or "node-status.json") if isinstance(d, dict) else \
        "node-status.json"
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(
        os.path.abspath(config)), path)


def coordinator_health(address: str, tls_dir: str, identity: str, server_name: str,
                       timeout: float = 5.0) -> bool:
    """True when the coordinator's gRPC health service answers SERVING."""
    import grpc  # grpc loads only for this check: the node probe starts without it
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from meanshift_rpc.tls import TLSFiles, open_channel

    ch = open_channel(address, TLSFiles.in_dir(tls_dir, identity), identity,
                      server_name or None)
    try:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""),
                                                 timeout=timeout)
        return r.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
    finally:
        ch.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m meanshift_cli.probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    n = sub.add_parser("node", help="a party or dealer node: its last acknowledged heartbeat")
    n.add_argument("config", help="the node's YAML config")
    n.add_argument("--max-age", type=float, default=20.0, help="seconds (default 20)")
    c = sub.add_parser("coordinator", help="the coordinator's gRPC health service")
    c.add_argument("address", help="host:port")
    c.add_argument("--tls-dir", required=True, help="folder with ca.pem and <identity>.pem/.key")
    c.add_argument("--identity", required=True, help="e.g. coordinator, operator:olga")
    c.add_argument("--server-name", default="", help="TLS name of the coordinator")
    args = ap.parse_args(argv)
    try:
        if args.what == "coordinator":
            ok = coordinator_health(args.address, args.tls_dir, args.identity, args.server_name)
            print("SERVING" if ok else "NOT SERVING")
            return 0 if ok else 3
        rc, out, err = node_health(status_file_of(args.config), args.max_age)
    except (OSError, ValueError) as exc:        # a missing config or TLS file, bad YAML
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in err:
        print(line, file=sys.stderr)
    for line in out:
        print(line)
    return rc


if __name__ == "__main__":
    sys.exit(main())
