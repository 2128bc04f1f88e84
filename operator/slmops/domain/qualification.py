"""Qualified or Rejected: a language-model variant's measurements against `spec.evaluation`.

Pure: numbers in, verdicts out. Measuring happens in `slmops.optimize.evaluation`, on the
machine the variant will run on; this only applies the budgets, so the decision can be tested
without a model and explained with the numbers that made it.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
# Derived figures carry float noise (105/100 - 1 is 0.05000000000000004); a measurement equal
# to its limit must pass.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class LMMeasurements:
    """A variant and its fp32 reference, measured in the same job on the same machine."""

    size_bytes: int
    reference_size_bytes: int
    perplexity: float
    reference_perplexity: float
    next_token_agreement: float
    tokens_per_second: float
    reference_tokens_per_second: float

    @property
    def perplexity_delta_percent(self) -> float:
        return (self.perplexity / self.reference_perplexity - 1.0) * 100.0

    @property
    def speedup(self) -> float:
        return self.tokens_per_second / self.reference_tokens_per_second

    @property
    def compression_ratio(self) -> float:
        return self.reference_size_bytes / self.size_bytes

    @property
    def size_mib(self) -> float:
        return self.size_bytes / MIB


@dataclass(frozen=True)
class LMBudgets:
    """The limits of `spec.evaluation` that apply to a language model.

    `min_speedup` 0 and the `None`s mean "no limit"; perplexity always has one (default +5%).
    """

    max_perplexity_increase_percent: float = 5.0
    min_speedup: float = 0.0
    min_next_token_agreement: float | None = None
    max_size_mib: float | None = None


@dataclass(frozen=True)
class BudgetVerdict:
    """One budget: its API name (as in `spec.evaluation`), limit, measured value, outcome."""

    name: str
    passed: bool
    limit: float
    actual: float
    message: str


@dataclass(frozen=True)
class Qualification:
    qualified: bool
    verdicts: tuple[BudgetVerdict, ...]
    message: str

    @property
    def broken(self) -> tuple[BudgetVerdict, ...]:
        return tuple(v for v in self.verdicts if not v.passed)


def _at_most(name: str, label: str, actual: float, limit: float, unit: str) -> BudgetVerdict:
    passed = actual <= limit + _TOLERANCE * max(1.0, abs(limit))
    relation = "<=" if passed else "exceeds"
    return BudgetVerdict(
        name, passed, limit, actual, f"{label} {actual:.2f}{unit} {relation} {limit:g}{unit}"
    )


def _at_least(name: str, label: str, actual: float, limit: float, unit: str) -> BudgetVerdict:
    passed = actual >= limit - _TOLERANCE * max(1.0, abs(limit))
    relation = ">=" if passed else "is below"
    return BudgetVerdict(
        name, passed, limit, actual, f"{label} {actual:.3f}{unit} {relation} {limit:g}{unit}"
    )


def qualify(measured: LMMeasurements, budgets: LMBudgets) -> Qualification:
    """Every budget is checked (not just the first broken one) so a person sees all that failed."""
    delta = measured.perplexity_delta_percent
    verdicts = [
        _at_most(
            "maxPerplexityIncreasePercent",
            f"perplexity {measured.perplexity:.2f} vs fp32 {measured.reference_perplexity:.2f}: "
            "increase",
            delta,
            budgets.max_perplexity_increase_percent,
            "%",
        )
    ]
    if budgets.min_speedup > 0:
        verdicts.append(
            _at_least(
                "minSpeedup",
                f"{measured.tokens_per_second:.1f} tokens/s vs fp32 "
                f"{measured.reference_tokens_per_second:.1f}: speedup",
                measured.speedup,
                budgets.min_speedup,
                "x",
            )
        )
    if budgets.min_next_token_agreement is not None:
        verdicts.append(
            _at_least(
                "minNextTokenAgreement",
                "next-token agreement with fp32",
                measured.next_token_agreement,
                budgets.min_next_token_agreement,
                "",
            )
        )
    if budgets.max_size_mib is not None:
        verdicts.append(
            _at_most("maxSizeMiB", "size", measured.size_mib, budgets.max_size_mib, " MiB")
        )
    broken = [v for v in verdicts if not v.passed]
    if broken:
        message = "; ".join(v.message for v in broken)
    else:
        message = (
            f"all budgets met: {measured.size_mib:.1f} MiB ({measured.compression_ratio:.2f}x "
            f"smaller), {measured.speedup:.2f}x tokens/s, perplexity {delta:+.2f}%, "
            f"next-token agreement {measured.next_token_agreement:.3f}"
        )
    return Qualification(not broken, tuple(verdicts), message)
