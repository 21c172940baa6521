"""`enrich tail` against the real broker: records decoded for people, vectors and images summarised."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest

from corpora import samples
from enrich.schemas import DeadLetter, encode, vector_bytes
from ops.kafka.clients import create_topics, publish
from ops.kafka.tail import summarise
from ops.local.harness import settings_env

pytestmark = pytest.mark.integration


def test_summaries_make_bytes_readable():
    png = samples.draw_image(1, (40, 30))
    out = summarise({"images": [png, b"junk"], "embedding": vector_bytes(np.array([3.0, 4.0])), "video": b"x" * 10,
                     "original": msgpack.packb({"id": "a"}), "key": b"item-1"})
    assert out["images"] == [f"PNG 40x30, {len(png):,} B", "4 B"]
    assert out["embedding"] == {"float32": 2, "norm": 5.0, "head": [3.0, 4.0]}
    assert out["video"] == "video, 10 B" and out["original"] == {"msgpack": {"id": "a"}} and out["key"] == "item-1"


def test_tail_prints_the_decoded_records_of_a_topic(local_stack):
    s = local_stack.updated(**{"topic_prefix": f"tail{time.time_ns()}."})
    create_topics(s)
    items = samples.sample_items(3, seed=2)
    publish(s, "items.new", [(i["id"].encode(), msgpack.packb(i, use_bin_type=True)) for i in items])
    dead = DeadLetter("not_msgpack", "decode", "x", "items.new", 0, 5, b"\xc1", b"k", 1)
    publish(s, "items.dlq", [(b"k", encode(dead))])

    def run(*args: str) -> list[dict]:
        res = subprocess.run([sys.executable, "-m", "ops.cli", "tail", *args, "--json", "--idle-s", "3"],
                             env=settings_env(s), capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return [json.loads(line) for line in res.stdout.splitlines()]

    got = run("items.new", "--from-beginning")
    assert sorted(r["key"] for r in got) == sorted(i["id"] for i in items)
    with_image = next(r for r in got if r["value"]["images"])
    assert all(" B" in x for x in with_image["value"]["images"])  # sizes, never raw bytes
    one = run("items.new", "--from-beginning", "--key", items[0]["id"])
    assert [r["key"] for r in one] == [items[0]["id"]] and one[0]["value"]["title"] == items[0]["title"]
    dlq = run("items.dlq", "--from-beginning")
    assert dlq[0]["value"]["reason"] == "not_msgpack" and dlq[0]["value"]["original"] == "1 B, not msgpack"
    res = subprocess.run([sys.executable, "-m", "ops.cli", "tail", "items.old"], env=settings_env(s),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "not one of the service's topics" in res.stderr
