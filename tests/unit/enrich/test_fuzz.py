"""Thousands of malformed events through the real pipeline (tiny models, in-process): each one becomes
exactly one dead letter with its specific reason, nothing raises, and good items around them still pass."""

from collections import Counter

import msgpack
import pytest

from corpora import samples
from enrich.assembly import make_pipeline
from enrich.models.inference import OnnxRuntimeBackend
from enrich.pipeline import Enriched, RawEvent, SourceRef
from enrich.schemas import DeadLetter


@pytest.mark.slow
def test_fuzzed_events_all_land_in_the_dlq_with_their_reason(model_settings):
    pipeline = make_pipeline(model_settings, OnnxRuntimeBackend(model_settings.models_path))
    fuzz = samples.fuzz_events(3000, seed=5)
    good = samples.sample_items(8, seed=6)
    # Duplicate ids are not an error: both copies are enriched (the second overwrites the first downstream).
    good_raw = [msgpack.packb(i, use_bin_type=True) for i in good + good[:2]]
    events = [RawEvent(None, raw, SourceRef("items.new", 0, k)) for k, (_, raw) in enumerate(fuzz)]
    events += [RawEvent(None, raw, SourceRef("items.new", 0, len(fuzz) + k)) for k, raw in enumerate(good_raw)]
    outcomes = []
    for start in range(0, len(events), 64):
        outcomes += pipeline.run(events[start:start + 64])
    assert len(outcomes) == len(events)
    dead = {o.source_offset: o for o in outcomes if isinstance(o, DeadLetter)}
    enriched = [o for o in outcomes if isinstance(o, Enriched)]
    wrong = [(k, expected, dead[k].reason if k in dead else "enriched") for k, (expected, _) in enumerate(fuzz)
             if k not in dead or dead[k].reason != expected]
    assert not wrong, wrong[:10]
    assert sorted(o.record.item_id for o in enriched) == sorted(i["id"] for i in good + good[:2])
    reasons = Counter(d.reason for d in dead.values())
    assert len(reasons) == 10 and min(reasons.values()) > 50, reasons  # random and truncated: not_msgpack
    assert all(d.detail and d.original for d in dead.values())
