"""Pseudonyms: random, stable until rotated, and rotation leaves the privacy budget alone."""

from fedrec.client import identity
from fedrec.client.budget import PrivacyAccount


def test_pseudonyms_are_random_per_install_and_rotate(tmp_path):
    a, b = identity.pseudonym(tmp_path / "a"), identity.pseudonym(tmp_path / "b")
    assert a != b and a == identity.pseudonym(tmp_path / "a")
    rotated = identity.rotate(tmp_path / "a")
    assert rotated != a and identity.pseudonym(tmp_path / "a") == rotated
    assert a not in (tmp_path / "a" / identity.IDENTITY_FILE).read_text()  # the old one is gone


def test_rotation_keeps_the_devices_budget(tmp_path):
    account = PrivacyAccount(tmp_path, 1e-5, "rdp")
    account.charge(1, "inputs", 1.0, 0.5, 4)
    spent = PrivacyAccount(tmp_path, 1e-5, "rdp").epsilon
    identity.rotate(tmp_path)
    assert PrivacyAccount(tmp_path, 1e-5, "rdp").epsilon == spent > 0
