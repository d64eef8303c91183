"""The analyst's checks on a result (meanshift_rpc.results.open_result), in
process: every way a coordinator could alter, replay, reorder or forge the
parties' signed shares is refused with a reason; the honest result opens."""

import json
import os

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meanshift_proto.v1 import service_pb2 as pb
from meanshift_rpc import results, signing
from meanshift_rpc.tls import TLSFiles
from testkit import dev_pki

pytestmark = pytest.mark.timeout(60)
TABLE = [(0.25, 0.5, 1.0), (0.75, 0.5, 1.0), (0.0, 0.0, 0.0)]    # two kept, one empty slot


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    dev_pki(d, ["coordinator", "analyst:ann", "analyst:eve", "party:alpha",
                "party:beta", "party:gamma"])
    return d


SIGNED = None


@pytest.fixture(scope="module", autouse=True)
def _signed(pki):
    global SIGNED
    SIGNED = _job(pki)


def _files(pki, who):
    return TLSFiles.in_dir(pki, who).read()        # ca, cert, key


def _job(pki, reveal_to=("analyst:ann",)):
    _, cert, key = _files(pki, "analyst:ann")
    spec = {"name": "t", "parties": [{"id": "alpha", "dataset": "d"},
                                     {"id": "beta", "dataset": "d"}],
            "bandwidth": 0.1, "dust": 4, "bounds": {"lo": [0, 0], "hi": [2, 2]},
            "reveal_to": list(reveal_to), "dealer": "dd"}
    return signing.sign_spec(yaml.safe_dump(spec), key, cert)


def _result(pki, signed, table=TABLE, signers=("alpha", "beta")) -> pb.JobResult:
    job_id = json.loads(signed.payload)["job_id"]
    enc = np.array([[round(v * 2**16) for v in row] for row in table], dtype=np.int64).ravel()
    r = np.frombuffer(os.urandom(8 * enc.size), dtype=np.int64)
    ann = _files(pki, "analyst:ann")[1]
    res = pb.JobResult(job_id=job_id, signed_spec=signed.payload, signature=signed.signature,
                       signer_cert=signed.cert_pem)
    for rank, vals in enumerate((enc - r, r)):
        _, cert, key = _files(pki, f"party:{signers[rank]}")
        export = {"format": "sms-share/1", "rank": rank, "rows": len(table), "cols": 3,
                  "frac_scale": 2**16, "dim": 2, "sizes": False, "small": False,
                  "lo": [0.0, 0.0], "scale": 2.0, "values": [int(v) for v in vals]}
        res.shares.append(results.seal_share(export, ["a", "b"], job_id, signed.payload, rank,
                                             ["alpha", "beta"][rank], "analyst:ann", ann, key,
                                             cert))
    return res


def _open(pki, res, who="analyst:ann", job_id=None):
    ca, _, key = _files(pki, who)
    return results.open_result(res, job_id or res.job_id, who, key, ca)


def test_the_honest_result_opens_in_data_units(pki):
    out, cols = _open(pki, _result(pki, _job(pki)))
    np.testing.assert_allclose(out.centroids, [[0.5, 1.0], [1.5, 1.0]])
    assert cols == ["a", "b"]


def _swap_ranks(res):
    a, b = pb.SealedShare(), pb.SealedShare()
    a.CopyFrom(res.shares[0])
    b.CopyFrom(res.shares[1])
    a.rank, b.rank = 1, 0
    del res.shares[:]
    res.shares.extend([a, b])


@pytest.mark.parametrize("alter, words", [
    (lambda res, pki: _swap_ranks(res), "not party:"),
    (lambda res, pki: setattr(res.shares[0], "recipient", "analyst:eve"),
     "exactly one share"),
    (lambda res, pki: setattr(res, "signed_spec", b""), "signed job"),
    (lambda res, pki: setattr(res, "signature", res.shares[0].signature),
     "does not verify"),
    (lambda res, pki: res.shares[1].CopyFrom(
        _result(pki, _job(pki)).shares[1]), "signed statement"),     # another job's share
    (lambda res, pki: res.shares.append(res.shares[0]), "exactly one share"),
])
def test_altered_results_are_refused(pki, alter, words):
    res = _result(pki, _job(pki))
    alter(res, pki)
    with pytest.raises(results.ResultError) as e:
        _open(pki, res)
    assert words in str(e.value), e.value


def test_a_share_signed_by_another_party_or_for_another_job_id_is_refused(pki):
    res = _result(pki, _job(pki), signers=("alpha", "gamma"))
    with pytest.raises(results.ResultError, match="not party:beta"):
        _open(pki, res)
    good = _result(pki, _job(pki))
    with pytest.raises(results.ResultError, match="another job"):
        _open(pki, good, job_id="0" * 24)
    with pytest.raises(results.ResultError):        # eve is no receiver of this job
        _open(pki, good, who="analyst:eve")


FIELDS = ("ephemeral_key", "nonce", "ciphertext", "statement", "signature", "cert")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(FIELDS), st.integers(0, 1), st.binary(max_size=64),
       st.integers(0, 10_000))
def test_any_altered_byte_field_is_refused_with_a_reason(pki, field, rank, junk, at):
    res = _result(pki, SIGNED)
    old = getattr(res.shares[rank], field)
    i = at % (len(old) + 1)
    new = old[:i] + junk + old[i + len(junk):]
    setattr(res.shares[rank], field, new)
    if new == old or (field == "cert" and _same_cert(old, new)):
        return              # e.g. bytes after the PEM's end: still the party's certificate
    with pytest.raises(results.ResultError):
        _open(pki, res)


def _same_cert(a: bytes, b: bytes) -> bool:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(a) == x509.load_pem_x509_certificate(b)
    except ValueError:
        return False
