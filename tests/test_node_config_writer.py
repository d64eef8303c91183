"""party_node.config.write_node_config: the one writer of node configs (demo,
init-cluster, the tests) writes what party_node.config.load reads back."""

import os

import pytest
import yaml

from meanshift_cli.cluster_init import init_cluster
from party_node.config import ConfigError, load, write_node_config


def test_party_and_dealer_configs_load_back(tmp_path):
    party = write_node_config(str(tmp_path / "a.yaml"), "alpha", "coord:1", certs="certs",
                              advertise="10.0.0.5", port_range=(29500, 29519),
                              datasets={"pts": "alpha.csv"}, server_name="localhost",
                              policy={"trusted_dealers": ["d"]}, mpc_timeout_s=20,
                              header="# a comment\n")
    cfg = load(party)
    assert (cfg.role, cfg.party_id, cfg.coordinator, cfg.server_name) == \
        ("party", "alpha", "coord:1", "localhost")
    assert cfg.tls.cert == str(tmp_path / "certs" / "party_alpha.pem")
    assert (cfg.advertise, cfg.port_range, cfg.mpc_timeout_s) == ("10.0.0.5", (29500, 29519), 20)
    assert list(cfg.datasets) == ["pts"] and cfg.policy.trusted_dealers == ["d"]
    assert open(party).read().startswith("# a comment\n")
    dealer = load(write_node_config(str(tmp_path / "d.yaml"), "d", "coord:1", dealer=True))
    assert (dealer.role, dealer.party_id, dealer.datasets) == ("dealer", "d", {})
    assert dealer.tls.key == str(tmp_path / "dealer_d.key")


def test_an_unknown_setting_is_refused_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="results_folder: not a node setting"):
        write_node_config(str(tmp_path / "a.yaml"), "alpha", "c:1", results_folder="r")
    assert not os.path.exists(tmp_path / "a.yaml")


def test_init_cluster_configs_load(tmp_path):
    init_cluster(str(tmp_path), ["alpha", "beta"], points=5)
    party = load(str(tmp_path / "alpha" / "node.yaml"))
    assert party.policy.allow_exact_results and party.datasets["demo"].path.endswith("points.csv")
    assert open(tmp_path / "alpha" / "node.yaml").read().startswith("# policy.allow_exact")
    dealer = load(str(tmp_path / "dealer" / "node.yaml"))
    assert dealer.role == "dealer" and dealer.port_range == (29500, 29519)
    assert yaml.safe_load(open(tmp_path / "client" / "job.yaml"))["dealer"] == "dealer"
