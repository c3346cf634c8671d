"""Generalization hierarchies, k-anonymity and ℓ-diversity against hand-counted tables."""

import pandas as pd
import pytest

from fedrec.common import anonymity
from fedrec.common.anonymity import AnonymizationConfig, Levels
from fedrec.common.errors import ConfigError


@pytest.mark.parametrize(("age", "level", "expected"), [
    (34, 0, "34"), (34, 1, "30-34"), (34, 2, "25-34"), (17, 2, "<18"), (56, 2, "56+"),
    (80, 2, "56+"), (24, 3, "<25"), (44, 3, "25-44"), (45, 3, "45+"), (34, 4, "*"),
    (None, 0, "*"),
])
def test_age_hierarchy(age, level, expected):
    assert anonymity.generalize_age(age, level) == expected


def test_zip_gender_and_occupation_hierarchies():
    assert [anonymity.generalize_zip("94110", lv) for lv in range(4)] == ["94110", "941", "9", "*"]
    assert anonymity.generalize_zip("V3N4P", 1) == "V3N"  # Canadian codes in ML-100K: text
    assert [anonymity.generalize_gender("F", lv) for lv in range(2)] == ["F", "*"]
    assert [anonymity.generalize_occupation("Programmer", lv) for lv in range(3)] == [
        "programmer", "technical", "*"]
    assert anonymity.generalize_occupation("astronaut", 1) == "other"


TABLE = pd.DataFrame({
    "age": [23, 24, 27, 31, 33, 52, 58],
    "zip": ["94110", "94117", "94110", "10001", "10002", "10003", "10004"],
    "gender": ["F", "F", "M", "M", "M", "F", "F"],
    "occupation": ["student", "student", "programmer", "engineer", "writer", "doctor", "lawyer"],
})


def test_anonymity_counts_classes_by_hand():
    raw = anonymity.anonymity(TABLE, Levels(0, 0, 0, 0))
    assert (raw["k"], raw["unique"], raw["classes"], raw["l_diversity"]) == (1, 7, 7, 1)
    # age in 3 groups, zip region, gender and occupation suppressed:
    # (<25, 9) x2, (25-44, 9) x1, (25-44, 1) x2, (45+, 1) x2
    coarse = anonymity.anonymity(TABLE, Levels(age=3, zip=2, gender=1, occupation=2))
    assert (coarse["k"], coarse["unique"], coarse["below_5"], coarse["classes"]) == (1, 1, 7, 4)
    # ℓ: occupations among users sharing age group, zip region and (suppressed) gender:
    # {student}, {programmer}, {engineer, writer}, {doctor, lawyer} -> 1
    assert coarse["l_diversity"] == 1


def test_choose_levels_is_the_least_generalization_reaching_k():
    levels = anonymity.choose_levels(TABLE, 2)
    sizes = anonymity.class_sizes(TABLE, levels)
    assert sizes.min() >= 2
    # nothing with less information loss reaches k = 2
    import itertools

    for combo in itertools.product(*(range(anonymity.MAX_LEVEL[n] + 1)
                                     for n in anonymity.QUASI_IDENTIFIERS)):
        other = Levels(*combo)
        if other.loss() < levels.loss():
            assert anonymity.class_sizes(TABLE, other).min() < 2
    assert anonymity.choose_levels(TABLE, 7) == Levels(4, 3, 1, 2)  # only everything suppressed
    with pytest.raises(ConfigError, match="fewer than anonymization.k = 8"):
        anonymity.choose_levels(TABLE, 8)


def test_explicit_levels_below_k_are_refused_with_the_reached_k():
    cfg = AnonymizationConfig(k=2, auto=False, age=0, zip=0, gender=0, occupation=0)
    with pytest.raises(ConfigError, match="leave a group of 1 users, below anonymization.k = 2"):
        cfg.resolve(TABLE)
    assert AnonymizationConfig(k=2).resolve(TABLE) == anonymity.choose_levels(TABLE, 2)
    assert AnonymizationConfig().resolve(None) == Levels()  # no profiles: nothing to check
    with pytest.raises(ConfigError, match="anonymization level age = 9"):
        AnonymizationConfig(age=9).validate()


@pytest.mark.parametrize("field", ["user", "user_id", "userId", "name", "first_name", "email",
                                   "e-mail", "phone_number", "device_id", "ip", "address",
                                   "userEmail", "homePhone", "macAddress", "customerId",
                                   "memberId", "uuid", "guid", "nickname", "displayName",
                                   "first name"])
def test_direct_identifiers_are_recognized(field):
    assert anonymity.is_direct_identifier(field)


@pytest.mark.parametrize("field", ["age", "zip", "gender", "occupation", "valid", "city",
                                   "zipCode", "ageGroup", "bio"])
def test_other_fields_are_not_direct_identifiers(field):
    assert not anonymity.is_direct_identifier(field)


def test_synthetic_profiles_reach_k5_after_generalization():
    from fedrec.common.data import synthetic

    data = synthetic.generate(num_users=300, num_items=40, interactions_per_user=5)
    report = anonymity.report(data.profiles, k=5)
    before, _, after = report["rows"]
    assert before["unique"] > 250 and after["unique"] == 0 and after["k"] >= 5
    assert set(report["direct_identifiers"]) == {"name", "email"}
