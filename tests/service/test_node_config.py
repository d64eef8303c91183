"""The node's YAML config: a typo is an error, never silently the default policy."""

import pytest

from party_node.config import ConfigError, load

pytestmark = pytest.mark.timeout(30)

GOOD = """\
party_id: alpha
coordinator: {address: "coord:50051", server_name: coord}
tls: {ca: certs/ca.pem, cert: certs/party_alpha.pem, key: certs/party_alpha.key}
datasets:
  patients: {path: data/p.csv, columns: [age, bmi]}
rendezvous: {advertise: 10.0.0.5, port_range: [29500, 29509], ifname: eth0}
policy: {kernels: [flat], min_parties: 3, allowed_submitters: ["analyst:alice"],
         allowed_receivers: [alpha]}
"""


def write(tmp_path, text):
    p = tmp_path / "node.yaml"
    p.write_text(text)
    return str(p)


def test_good_config_resolves_paths_relative_to_the_file(tmp_path):
    cfg = load(write(tmp_path, GOOD))
    assert cfg.identity == "party:alpha" and cfg.port_range == (29500, 29509)
    assert cfg.datasets["patients"].path == str(tmp_path / "data" / "p.csv")
    assert cfg.tls.ca == str(tmp_path / "certs" / "ca.pem")
    assert cfg.policy.kernels == ["flat"] and cfg.policy.min_parties == 3


def test_secure_defaults_and_budgets_per_data_set(tmp_path):
    cfg = load(write(tmp_path, GOOD.replace(
        "columns: [age, bmi]}",
        "columns: [age, bmi], privacy_budget: {epsilon: 1, delta: 1.0e-6}}\n"
        "  other: {path: data/o.csv}")))
    pol = cfg.policy
    assert pol.trusted_dealers == [] and pol.allow_exact_results is False
    assert (cfg.budget("patients").epsilon, cfg.budget("patients").delta) == (1.0, 1e-6)
    assert cfg.budget("other") == pol.privacy_budget
    assert (pol.privacy_budget.epsilon, pol.privacy_budget.delta) == (3.0, 1e-5)


@pytest.mark.parametrize("text, where", [
    (GOOD.replace("policy:", "polcy:"), "polcy"),
    (GOOD.replace("min_parties", "min_party"), "policy.min_party"),
    (GOOD.replace("[29500, 29509]", "5"), "wrong type"),
    (GOOD.replace("[29500, 29509]", "[29509, 29500]"), "port_range"),
    (GOOD.replace("kernels: [flat]", "kernels: flat"), "policy"),
    (GOOD.replace("party_id: alpha\n", ""), "party_id"),
    ("- just\n- a list\n", "mapping"),
    (GOOD.replace("allowed_receivers: [alpha]}",
                  "allowed_receivers: [alpha], privacy_budget: {epsilon: 0, delta: 1e-5}}"),
     "policy.privacy_budget.epsilon"),
    (GOOD.replace("allowed_receivers: [alpha]}",
                  "allowed_receivers: [alpha], privacy_budget: {epsilon: 1}}"),
     "policy.privacy_budget"),
    (GOOD.replace("allowed_receivers: [alpha]}",
                  "allowed_receivers: [alpha], allow_exact_results: yes please}"),
     "allow_exact_results"),
    (GOOD.replace("columns: [age, bmi]}", "columns: [age, bmi], budget: 1}"),
     "datasets.patients.budget"),
])
def test_bad_config_is_named(tmp_path, text, where):
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text))
    assert where in str(e.value)


def test_ifname_without_advertise_advertises_that_interfaces_ipv4(tmp_path):
    text = GOOD.replace("advertise: 10.0.0.5, ", "").replace("ifname: eth0", "ifname: lo")
    assert load(write(tmp_path, text)).advertise == "127.0.0.1"


def test_advertise_wins_over_ifname(tmp_path):
    # eth0 need not exist here: with advertise given it is not looked up
    assert load(write(tmp_path, GOOD)).advertise == "10.0.0.5"


@pytest.mark.parametrize("ifname", ["nosuchif0", "x" * 20, "7"])
def test_ifname_of_no_interface_is_a_config_error(tmp_path, ifname):
    text = GOOD.replace("advertise: 10.0.0.5, ", "").replace("ifname: eth0", f"ifname: {ifname}")
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text))
    assert "rendezvous.ifname" in str(e.value) and "\n" not in str(e.value)


def test_node_run_with_a_bogus_ifname_exits_2_naming_the_key(tmp_path):
    import subprocess
    import sys

    from testkit import ROOT, free_port

    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"party_id: alpha\ncoordinator: {{address: '127.0.0.1:{free_port()}'}}\n"
                   "insecure: true\ndatasets:\n  points: {path: p.csv}\n"
                   "rendezvous: {ifname: nosuchif0}\n")
    res = subprocess.run([sys.executable, "-m", "meanshift_cli", "node", "run", "--config",
                          str(cfg)], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert res.returncode == 2, res.stderr
    assert "rendezvous.ifname" in res.stderr and "no such network interface" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
