"""Ingest scrubbing: identifiers never enter device data; kept text loses its PII."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedrec.client.scrub import ingest, scrub_profile, scrub_text
from fedrec.common.anonymity import SECTOR_OF, Levels


@pytest.mark.parametrize(("text", "expected"), [
    ("write to ada.lovelace+recs@example.co.uk today", "write to [email] today"),
    ("see https://example.com/u/123 and www.shop.io", "see [url] and [url]"),
    ("my blog is ada-writes.net/about", "my blog is [url]"),
    ("call +1 (415) 555-0132 or 030 1234567", "call [phone] or [phone]"),
    ("order 1234567890123 arrived", "order [phone] arrived"),
    ("card 12345", "card [number]"),
    ("room 42, 2 beds", "room 42, 2 beds"),  # short numbers are not identifiers
])
def test_scrub_text_replaces_contacts_urls_and_long_numbers(text, expected):
    assert scrub_text(text) == expected


def test_scrub_text_removes_the_profiles_own_names_and_identifiers_as_whole_words():
    names = ["Ada Lovelace", "u000017", "196", "adalove"]
    assert scrub_text("Ada loved it; ADA LOVELACE again. Adam too.", names) == (
        "[name] loved it; [name] again. Adam too.")
    assert scrub_text("user 196 (u000017) is adalove; 1960 is a year", names) == (
        "user [name] ([name]) is [name]; 1960 is a year")


@pytest.mark.parametrize("text", ["a-" * 5000, "a." * 5000, "x" * 10000, "a@" * 5000,
                                  "1 " * 5000])
def test_scrubbing_stays_linear_on_adversarial_text(text):
    import time

    started = time.perf_counter()
    scrub_text(text)
    assert time.perf_counter() - started < 1.0  # quadratic patterns took 4-7 s here


@given(st.emails(), st.text(alphabet=st.characters(codec="ascii", categories=["L", "Zs"]),
                            max_size=30))
def test_no_email_survives_scrubbing(email, filler):
    assert email not in scrub_text(f"{filler} {email} {filler}")
    assert "@" not in scrub_text(f"{filler} {email} {filler}").replace(filler, "")


RAW = {"user": "u000017", "name": "Ada Lovelace", "email": "ada@example.com",
       "phone_number": "+44 20 7946 0958", "device_id": "A1B2-C3D4", "zip": "94110",
       "age": 36, "gender": "F", "occupation": "programmer", "bio": "Ada, mail ada@example.com",
       "favourite_number": 7, "hobby": "chess"}


def test_profile_keeps_only_generalized_quasi_identifiers_by_default():
    assert scrub_profile(RAW, Levels(age=2, zip=1, gender=0, occupation=1)) == {
        "age": "35-44", "zip": "941", "gender": "F", "occupation": "technical"}
    assert scrub_profile({}, Levels()) == {"age": "*", "zip": "*", "gender": "*",
                                           "occupation": "*"}


def test_kept_fields_are_scrubbed_and_identifiers_cannot_be_kept():
    kept = scrub_profile(RAW, Levels(), keep_fields=["bio", "favourite_number", "email",
                                                     "name", "missing"])
    assert kept["bio"] == "[name], mail [name]"  # the profile's own e-mail, as an identifier
    assert kept["favourite_number"] == 7.0
    assert "email" not in kept and "name" not in kept and "missing" not in kept


def test_ingest_yields_device_data_without_identifiers():
    data = ingest(RAW, np.array([3, 1, 4]), 1, 5, Levels())
    assert data.train_items.tolist() == [3, 1, 4] and (data.valid_item, data.test_item) == (1, 5)
    text = repr(data)
    for value in ("u000017", "Ada", "example.com", "7946", "A1B2", "94110"):
        assert value not in text
    with pytest.raises(ValueError, match="one-dimensional"):
        ingest(RAW, np.zeros((2, 2)), -1, -1, Levels())


def test_a_simulated_device_holds_only_its_scrubbed_record(tmp_path, monkeypatch):
    from fedrec.common.data import files, synthetic
    from fedrec.simulation.devices import DataSpec, user_partition

    monkeypatch.setenv("FEDREC_HOME", str(tmp_path))
    data = synthetic.generate(num_users=30, num_items=40, interactions_per_user=8, name="dev")
    files.save_dir(data, tmp_path / "datasets" / "dev")
    levels = Levels(age=3, zip=2, gender=0, occupation=1)
    device = user_partition(DataSpec("dev", 0.0, 0, "all-MiniLM-L6-v2", levels), 4)
    row = data.profiles.iloc[4]
    age = row["age"]
    assert device.profile == {
        "age": "<25" if age < 25 else "25-44" if age < 45 else "45+", "zip": row["zip"][0],
        "gender": row["gender"], "occupation": SECTOR_OF.get(row["occupation"], "other")}
    text = repr(device)
    for value in (data.user_ids[4], row["name"], row["email"], row["zip"]):
        assert str(value) not in text
