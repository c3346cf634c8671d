"""`fedrec plan` refuses a cohort larger than the deployment it plans for."""


def test_more_clients_per_round_than_devices_is_refused(fedrec_cli, tmp_path):
    code, _, err = fedrec_cli("plan", "--out", str(tmp_path / "app"), "--clients", "3")
    assert code == 2
    assert err.strip() == ("error: federation.clients_per_round = 45 (the default): more clients "
                           "per round than the 3 devices of --clients; expected at most 3")
    assert not (tmp_path / "app").exists()
    code, _, err = fedrec_cli("plan", "--out", str(tmp_path / "app"), "--clients", "0")
    assert code == 2 and "--clients 0: expected at least 1 device" in err
