"""The interleaved timer every benchmark script shares: order, setup/teardown, collector state."""

from __future__ import annotations

import gc

import pytest

from benchmarks._common import Variant, measure, speed_ratio


def test_variants_are_interleaved_and_rotated_each_repeat():
    calls: list[str] = []
    variants = [Variant(name, lambda _, n=name: calls.append(n)) for name in "abc"]
    stats = measure(variants, repeats=3)
    assert calls == list("abc" "bca" "cab")
    assert all(len(s["samples_s"]) == 3 for s in stats.values())


def test_warmup_runs_each_variant_once_untimed():
    calls: list[str] = []
    stats = measure([Variant("a", lambda _: calls.append("a"))], repeats=2, warmup=True)
    assert calls == ["a"] * 3 and len(stats["a"]["samples_s"]) == 2


def test_setup_result_reaches_run_and_teardown_always_runs():
    seen, torn = [], []

    def fail(context):
        seen.append(context)
        raise RuntimeError("variant failed")

    with pytest.raises(RuntimeError, match="variant failed"):
        measure([Variant("x", fail, setup=lambda: "ctx", teardown=torn.append)], repeats=1)
    assert seen == ["ctx"] and torn == ["ctx"]


def test_heap_is_frozen_while_timing_and_released_after():
    if gc.get_freeze_count():
        pytest.skip("something else in this process froze the heap")
    frozen_during: list[int] = []
    measure([Variant("a", lambda _: frozen_during.append(gc.get_freeze_count()))], repeats=1)
    assert frozen_during[0] > 0  # objects alive before timing are skipped by each collection
    assert gc.get_freeze_count() == 0
    with pytest.raises(ZeroDivisionError):
        measure([Variant("b", lambda _: 1 / 0)], repeats=1)
    assert gc.get_freeze_count() == 0


def test_a_heap_frozen_by_the_caller_stays_frozen():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        measure([Variant("a", lambda _: None)], repeats=1)
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="unique"):
        measure([Variant("a", lambda _: None), Variant("a", lambda _: None)], repeats=1)


def test_speed_ratio_pairs_samples_of_the_same_repeat():
    stats = {"fast": {"samples_s": [1.0, 2.0], "median_s": 1.5, "work": 1.0},
             "slow": {"samples_s": [2.0, 8.0], "median_s": 5.0, "work": 1.0}}
    ratio = speed_ratio(stats, "fast", "slow")
    assert ratio["value"] == pytest.approx(5.0 / 1.5)
    assert (ratio["paired_min"], ratio["paired_max"]) == (2.0, 4.0)
