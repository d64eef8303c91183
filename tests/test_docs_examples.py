"""The examples in the docs, executed as written (issue 20): a doc that drifts
from the code fails here.

- every `secure-meanshift ...` command in README.md, docs/operating.md,
  docs/dealer.md and docs/containers.md (also inside `docker run IMAGE ...` and
  `docker compose run ... client ...`) parses with the CLI's own parser: every
  flag and choice exists;
- every YAML block parses; the node configs load with the node's loader (with
  the files they name made in a temporary folder), the dealer's as a dealer;
- the job example parses, and the node examples' policies accept it (operating.md's
  node for operating.md's job; containers.md's alpha for the job its text describes).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex

import numpy as np
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", "docs/operating.md", "docs/dealer.md", "docs/containers.md"]


def _blocks(doc: str, lang: str) -> list:
    with open(os.path.join(ROOT, doc)) as fh:
        return re.findall(rf"```{lang}\n(.*?)```", fh.read(), re.S)


def _commands(doc: str) -> list:
    """(line, argv) of each secure-meanshift invocation in the doc's bash blocks;
    'a|b|c' alternatives expanded, '...' dropped."""
    out = []
    for block in _blocks(doc, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r";|&&", line):
                words = shlex.split(part, comments=True)
                args = _cli_args(words)
                if args is None:
                    continue
                args = [w for w in args if w != "..."]
                alts = [i for i, w in enumerate(args) if "|" in w]
                for alt in (args[alts[0]].split("|") if alts else [None]):
                    argv = list(args)
                    if alt is not None:
                        argv[alts[0]] = alt
                    out.append((part.strip(), argv))
    return out


def _cli_args(words: list):
    for i, w in enumerate(words):
        if w in ("secure-meanshift", "secure-meanshift:latest") or \
                w.endswith("/secure-meanshift"):
            return words[i + 1:]
        if w == "client" and words[:3] == ["docker", "compose", "run"]:
            return words[i + 1:]
    return None


ALL_COMMANDS = [(doc, line, argv) for doc in DOCS for line, argv in _commands(doc)]


def test_the_docs_have_commands():
    assert len(ALL_COMMANDS) > 20
    assert {doc for doc, _, _ in ALL_COMMANDS} == set(DOCS)


@pytest.mark.parametrize("doc,line,argv", ALL_COMMANDS,
                         ids=[f"{d}:{' '.join(a[:2])}" for d, _, a in ALL_COMMANDS])
def test_every_documented_command_parses(doc, line, argv):
    from meanshift_cli.main import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser(argv).parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{doc}: `{line}` does not parse (exit {exc.code}): {err.getvalue()}")


def _example(doc: str, key: str) -> str:
    found = [b for b in _blocks(doc, "yaml") if re.search(rf"^{key}:", b, re.M)]
    assert len(found) == 1, f"{doc}: expected one YAML block with {key}:"
    return found[0]


def test_every_yaml_block_parses():
    for doc in DOCS:
        for block in _blocks(doc, "yaml"):
            assert isinstance(yaml.safe_load(block), dict), doc


def _materialise(tmp, text: str, identity: str) -> str:
    """Write the config as written and the files it names (certificates of the
    federation's CA, a CSV with the named columns); returns the config's path."""
    from meanshift_rpc.tls import make_dev_pki

    d = yaml.safe_load(text)
    path = os.path.join(tmp, "node.yaml")
    with open(path, "w") as fh:
        fh.write(text)
    files = make_dev_pki(os.path.join(tmp, "pki"), [identity], hosts=["localhost"])[identity]
    for key, src in (("ca", os.path.join(tmp, "pki", "ca.pem")), ("cert", files.cert),
                     ("key", files.key)):
        dst = os.path.join(tmp, d["tls"][key])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            fo.write(fi.read())
        os.chmod(dst, 0o600)
    rng = np.random.default_rng(1)
    for ds in (d.get("datasets") or {}).values():
        cols = ds.get("columns") or ["x", "y"]
        dst = os.path.join(tmp, ds["path"])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        np.savetxt(dst, 20 + 30 * rng.random((40, len(cols))), delimiter=",",
                   header=",".join(cols), comments="")
    return path


def _node(tmp, text: str, identity: str):
    from party_node.config import load
    from party_node.node import PartyNode

    cfg = load(_materialise(tmp, text, identity))
    return cfg, PartyNode(cfg)


def _accepts(node, job: dict, submitter: str) -> str:
    from meanshift_proto.v1 import service_pb2 as pb
    from meanshift_rpc import jobspec

    spec = jobspec.parse(yaml.safe_dump(job))
    return node._policy_check(pb.Offer(job_id="x", spec=spec, submitter=submitter), spec,
                              submitter)


def test_operating_node_example_loads_and_accepts_the_job_example(tmp_path):
    cfg, node = _node(str(tmp_path), _example("docs/operating.md", "party_id"),
                      "party:hospital-a")
    assert cfg.party_id == "hospital-a" and cfg.role == "party"
    job = yaml.safe_load(_example("docs/operating.md", "reveal_to"))
    assert _accepts(node, job, "analyst:alice") == ""


def test_containers_node_example_accepts_the_job_the_text_describes(tmp_path):
    cfg, node = _node(str(tmp_path), _example("docs/containers.md", "party_id"),
                      "party:alpha")
    job = yaml.safe_load(_example("docs/operating.md", "reveal_to"))
    job.update(parties=[{"id": "alpha", "dataset": "demo"}, {"id": "beta", "dataset": "demo"}],
               dealer="dealer-1", reveal_to=["analyst:alice"])
    assert _accepts(node, job, "analyst:alice") == ""


def test_dealer_example_loads_as_a_dealer(tmp_path):
    from party_node.config import load

    cfg = load(_materialise(str(tmp_path), _example("docs/dealer.md", "dealer_id"),
                            "dealer:dealer-1"))
    assert cfg.role == "dealer" and cfg.party_id == "dealer-1" and not cfg.datasets
