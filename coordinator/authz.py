"""Who may do what at the coordinator (one home for every rule):

- submit: the roles and identities of ``coordinator serve --submitter`` (analysts
  and operators by default; never a party unless named);
- read a job (status, watch, list): its submitter, its parties, an operator;
- cancel: the same (a party may always withdraw its data);
- result: the job's receivers only (a bare name in reveal_to is a party id, an
  analyst is listed with its full identity);
- node calls: party and dealer certificates only;
- party details (data sets, jobs): operators and the node itself.
"""

from __future__ import annotations

import json

from meanshift_proto.v1 import service_pb2 as pb
from meanshift_rpc.tls import role_of

SUBMIT_ROLES = ("analyst", "operator")      # who may submit unless --submitter says otherwise


def may_submit(who: str, submitters: list) -> bool:
    return role_of(who) in submitters or who in submitters


def may_read(who: str, row: dict) -> bool:
    """Job reads and cancels: its submitter, its parties, the operator (and the coordinator)."""
    return who in (row["submitter"], "coordinator") or role_of(who) == "operator" or (
        role_of(who) == "party" and who[len("party:"):] in json.loads(row["parties"]))


may_cancel = may_read


def may_receive(who: str, spec: pb.JobSpec) -> bool:
    """The job's result: its receivers only."""
    allowed = set(spec.reveal_to)
    return (who.startswith("party:") and who[6:] in allowed
            and who[6:] in {p.id for p in spec.parties}) or \
        (who.startswith("analyst:") and who in allowed)


def node_key(who: str) -> str:
    """A node's key (a party id, or "dealer:<name>"), '' for any other identity."""
    if role_of(who) == "dealer":
        return who
    if role_of(who) == "party":
        return who[len("party:"):]
    return ""


def sees_node_details(who: str, node_identity: str) -> bool:
    """Data set names, their state and the node's jobs: operators and the node itself."""
    return role_of(who) == "operator" or who in ("coordinator", node_identity)
