"""`secure-meanshift certs`: a CA-only command, --days validated with a message,
help text on every flag (issue 20)."""

from __future__ import annotations

import os

import pytest

from meanshift_cli.main import build_parser, main


@pytest.mark.parametrize("days", ["0", "-1", "4000"])
def test_days_out_of_range_is_refused_with_a_message(tmp_path, capsys, days):
    for action in ([], ["ca"]):
        assert main(["certs", *action, "--out", str(tmp_path / "x"), "--days", days]) == 2
        assert f"--days must be 1 to 3650 (days the certificate is valid), not {days}" in \
            capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_certs_ca_makes_only_the_ca_and_keeps_an_existing_one(tmp_path, capsys):
    out = tmp_path / "ca"
    assert main(["certs", "ca", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["ca.key", "ca.pem"]
    assert os.stat(out / "ca.key").st_mode & 0o077 == 0
    first = (out / "ca.pem").read_bytes()
    assert main(["certs", "ca", "--out", str(out)]) == 0
    assert "existed already, kept" in capsys.readouterr().out
    assert (out / "ca.pem").read_bytes() == first


def test_dev_days_sets_the_validity(tmp_path):
    from cryptography import x509

    assert main(["certs", "--out", str(tmp_path), "--party", "a", "--days", "7"]) == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "party_a.pem").read_bytes())
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert 7 <= days <= 8


def test_every_certs_flag_has_help():
    ap = build_parser(["certs"])
    certs = next(a for a in ap._subparsers._group_actions[0].choices.items()
                 if a[0] == "certs")[1]
    missing = [a.option_strings or a.dest for a in certs._actions
               if not a.help and a.dest != "help"]
    assert not missing, missing
