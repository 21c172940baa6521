"""The backlog benchmark's per-stage figures, on times made up to show a stall."""

from __future__ import annotations

from ops.measure.backlog import summarise


def test_a_second_stage_that_holds_items_back_shows_as_stalled_windows_and_a_long_hand_off():
    created = {f"i{k}": 0 for k in range(40)}
    enriched = {f"i{k}": 1_000 * k for k in range(40)}  # the first stage: one item a second for 40 s
    held = {f"i{k}": 40_000 for k in range(40)}  # the second: nothing until everything is enriched
    flowing = {i: t + 50 for i, t in enriched.items()}  # the second: 50 ms behind the first
    stalled, smooth = summarise(created, enriched, held), summarise(created, enriched, flowing)
    assert stalled["stalled_windows"] == 3 and smooth["stalled_windows"] == 0
    assert stalled["published_per_10s"] == [0, 0, 0, 0, 40] and smooth["published_per_10s"] == [10, 10, 10, 10]
    assert stalled["enriched_to_published"]["max_s"] == 40.0 and smooth["enriched_to_published"]["p99_s"] == 0.05
    assert smooth["first_stage_items_per_s"] == round(40 / 39, 2)
