"""Disjoint face-world identity-id ranges: who may train on what.

Ids >= 1,000,000 are never used for training or tuning anything; every reported figure is measured there.
"""

from __future__ import annotations

ARCFACE_TRAIN = range(0, 10_000)
JUDGE_TRAIN = range(10_000, 20_000)
GENERATOR_TRAIN = range(20_000, 100_000)
VALIDATION = range(100_000, 200_000)  # thresholds, early stopping, hyper-parameter sweeps
DEVELOPMENT = range(200_000, 1_000_000)  # held-out ids for day-to-day checks and demo examples
EVALUATION_START = 1_000_000  # [1,000,000, inf): reported figures only


def check_evaluation_ids(ids) -> None:
    """Refuse to report a figure on ids that some part of the system may have trained or tuned on."""
    low = min(ids)
    if low < EVALUATION_START:
        raise ValueError(f"evaluation ids must be >= {EVALUATION_START:,}; got {low}")


def check_validation_ids(ids) -> None:
    """Refuse to choose a default on ids outside the validation range (evaluation ids above all)."""
    if min(ids) not in VALIDATION or max(ids) not in VALIDATION:
        raise ValueError(f"this chooses defaults: validation ids only ({VALIDATION.start:,}-{VALIDATION.stop - 1:,})")


def validation_ids_or_exit(first: int, count: int) -> range:
    """For a script that chooses defaults: ids ``first`` .. ``first + count - 1``, or exit with the reason when any
    lies outside the validation range (``check_validation_ids``)."""
    ids = range(first, first + count)
    try:
        check_validation_ids(ids)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return ids
