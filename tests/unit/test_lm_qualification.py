"""Budget decisions for language-model variants (pure)."""

from __future__ import annotations

import pytest

from slmops.domain.qualification import LMBudgets, LMMeasurements, qualify

pytestmark = pytest.mark.unit

MIB = 1024 * 1024


def measured(**overrides: float) -> LMMeasurements:
    values: dict[str, float] = {
        "size_bytes": 20 * MIB,
        "reference_size_bytes": 80 * MIB,
        "perplexity": 102.0,
        "reference_perplexity": 100.0,
        "next_token_agreement": 0.95,
        "tokens_per_second": 1000.0,
        "reference_tokens_per_second": 200.0,
    }
    values.update(overrides)
    return LMMeasurements(
        size_bytes=int(values["size_bytes"]),
        reference_size_bytes=int(values["reference_size_bytes"]),
        perplexity=values["perplexity"],
        reference_perplexity=values["reference_perplexity"],
        next_token_agreement=values["next_token_agreement"],
        tokens_per_second=values["tokens_per_second"],
        reference_tokens_per_second=values["reference_tokens_per_second"],
    )


def test_derived_figures() -> None:
    m = measured()
    assert m.perplexity_delta_percent == pytest.approx(2.0)
    assert m.speedup == pytest.approx(5.0)
    assert m.compression_ratio == pytest.approx(4.0)
    assert m.size_mib == pytest.approx(20.0)


def test_all_budgets_met_is_qualified_and_says_why() -> None:
    decision = qualify(
        measured(),
        LMBudgets(
            max_perplexity_increase_percent=5,
            min_speedup=4,
            min_next_token_agreement=0.9,
            max_size_mib=25,
        ),
    )
    assert decision.qualified
    assert [v.name for v in decision.verdicts] == [
        "maxPerplexityIncreasePercent",
        "minSpeedup",
        "minNextTokenAgreement",
        "maxSizeMiB",
    ]
    assert all(v.passed for v in decision.verdicts)
    assert decision.message.startswith("all budgets met")
    assert "5.00x tokens/s" in decision.message


def test_perplexity_budget_is_always_checked_and_names_the_numbers() -> None:
    decision = qualify(measured(perplexity=110.0), LMBudgets(max_perplexity_increase_percent=5))
    assert not decision.qualified
    (verdict,) = decision.broken
    assert verdict.name == "maxPerplexityIncreasePercent"
    assert verdict.actual == pytest.approx(10.0)
    assert verdict.limit == 5
    assert "110.00" in decision.message and "100.00" in decision.message
    assert "exceeds 5%" in decision.message


def test_every_broken_budget_is_reported() -> None:
    decision = qualify(
        measured(tokens_per_second=300.0, next_token_agreement=0.5, size_bytes=30 * MIB),
        LMBudgets(min_speedup=4, min_next_token_agreement=0.9, max_size_mib=25),
    )
    assert not decision.qualified
    assert {v.name for v in decision.broken} == {
        "minSpeedup",
        "minNextTokenAgreement",
        "maxSizeMiB",
    }
    assert "speedup 1.500x is below 4x" in decision.message
    assert "next-token agreement with fp32 0.500 is below 0.9" in decision.message
    assert "size 30.00 MiB exceeds 25 MiB" in decision.message


def test_unset_budgets_are_not_checked() -> None:
    decision = qualify(measured(tokens_per_second=1.0), LMBudgets())
    assert decision.qualified
    assert [v.name for v in decision.verdicts] == ["maxPerplexityIncreasePercent"]


def test_limits_are_inclusive() -> None:
    decision = qualify(
        measured(perplexity=105.0, tokens_per_second=800.0),
        LMBudgets(max_perplexity_increase_percent=5.0, min_speedup=4.0),
    )
    assert decision.qualified


def test_a_better_variant_than_fp32_passes_the_perplexity_budget() -> None:
    decision = qualify(measured(perplexity=99.0), LMBudgets(max_perplexity_increase_percent=0))
    assert decision.qualified
