"""Tiers are read from a practice's data and order practices recommended, promising, emerging."""

from careplan.practices.tiers import TIER_EXTENSION, TIER_ORDER, TIER_SYSTEM, sort_key, tier_of


def _with_tier(code, system=TIER_SYSTEM, url=TIER_EXTENSION):
    return {"resourceType": "PlanDefinition", "status": "active",
            "extension": [{"url": url, "valueCoding": {"system": system, "code": code}}]}


def test_tier_of_reads_the_tier_extension():
    assert [tier_of(_with_tier(code)) for code in TIER_ORDER] == ["recommended", "promising", "emerging"]


def test_tier_of_ignores_other_systems_extensions_and_unknown_codes():
    assert tier_of(_with_tier("promising", system="http://example.org/tiers")) is None
    assert tier_of(_with_tier("promising", url="http://example.org/other")) is None
    assert tier_of(_with_tier("leading")) is None
    assert tier_of({"resourceType": "PlanDefinition"}) is None


def test_sort_key_follows_the_adoption_order_with_unknown_last():
    tiers = ["emerging", None, "recommended", "unheard-of", "promising"]
    assert sorted(tiers, key=sort_key)[:3] == ["recommended", "promising", "emerging"]
    assert sort_key(None) == sort_key("unheard-of") > sort_key("emerging")
