"""disclose() is the engine's one way to make a secret-shared value public:
its reasons are exactly the ids of docs/leakage.md, no engine code opens a
value any other way, and observers see every disclosure (tests count them
there instead of patching CrypTen)."""

import os
import re

import pytest

from secure_meanshift import disclosure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join(ROOT, "secure_meanshift")

# Raw openings allowed outside disclosure.py: each opens only masked values,
# uniformly random to every party (docs/leakage.md, last paragraph of "What the
# protocol itself does NOT reveal").
MASKED_OPENINGS = {
    # mpc/beaver.py: the Beaver openings x - a / y - b (masked by the dealer's
    # triple), the truncation and sign-test openings x + r (masked by the
    # dealer's r), the AND openings (binary triples) and the bit-conversion
    # opening b ^ rho (a dealer's random bit). signtest.py and division.py get
    # these openers from beaver.py and call no opening of their own.
    "mpc/beaver.py",
    # mpc/communicator.py: defines all_reduce (the transport of every opening).
    "mpc/communicator.py",
}
RAW_OPENING = re.compile(r"get_plain_text|all_reduce\(|\.reveal\(|reveal_batch")


def _leakage_ids() -> set:
    with open(os.path.join(ROOT, "docs", "leakage.md")) as f:
        return set(re.findall(r"`\[([a-z][a-z0-9-]*)\]`", f.read()))


def test_every_reason_names_a_row_of_leakage_md_and_back():
    ids = _leakage_ids()
    assert set(disclosure.REASONS) - ids == set(), "reasons missing from docs/leakage.md"
    assert ids - set(disclosure.REASONS) == set(), "leakage.md ids with no reason"


def test_no_engine_code_opens_a_value_outside_disclose():
    found = {}
    for folder, _, names in os.walk(ENGINE):
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(folder, name), ENGINE).replace(os.sep, "/")
            if name.endswith(".py") and rel != "disclosure.py":
                with open(os.path.join(folder, name)) as f:
                    hits = RAW_OPENING.findall(f.read())
                if hits:
                    found[rel] = sorted(set(hits))
    assert set(found) - MASKED_OPENINGS == set(), found
    # the allow-list stays honest: every entry still needs to be there
    assert MASKED_OPENINGS - set(found) == set(), found


def test_observers_see_reason_shape_and_receivers_and_bad_reasons_fail():
    with disclosure.observe() as seen:
        disclosure.record("result", (3, 4), to=[1])
    disclosure.record("stop-bit", (2,))            # no observer any more: nothing kept
    assert seen == [disclosure.Disclosure("result", (3, 4), (1,))]
    with pytest.raises(ValueError, match="not in disclosure.REASONS"):
        disclosure.record("my-debug-print", (1,))
