"""`enrich data debtags|debtags-zh|appstream` (the dataset snapshots) and `enrich vocab load|prototypes|prior`
(the tags)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from enrich.errors import EnrichError
from ops.cli.console import say
from ops.settings import ToolSettings
from streams.topology import TAGS_VOCAB


def cmd_data(s: ToolSettings, a: argparse.Namespace) -> int:
    from corpora import appstream, appstream_zh, debtags, debtags_zh

    dataset = {"debtags": debtags, "debtags-zh": debtags_zh, "appstream": appstream,
               "appstream-zh": appstream_zh}[a.action]
    what = {"debtags": "English descriptions", "debtags-zh": "the zh_CN description translations",
            "appstream": "AppStream metadata and icons",
            "appstream-zh": "AppStream metadata and the gnome-menus package"}[a.action]
    lists = a.lists
    if a.fetch:
        lists = lists or s.state_dir / f"apt-lists-{a.action}"
        say(f"apt-get update ({what}) into {lists}")
        dataset.fetch_lists(lists)
    if lists is None:
        needs = {"debtags": "*_Packages and *_Translation-en indexes",
                 "debtags-zh": "*_Packages and *_Translation-zh_CN indexes",
                 "appstream": "*_dep11_Components-*.yml.gz and *_dep11_icons-64x64.tar.gz",
                 "appstream-zh": "*_dep11_Components-*.yml.gz and gnome-menus_*.deb"}[a.action]
        raise EnrichError(f"pass --fetch (runs apt-get update into a private lists dir) or --lists DIR (a dir "
                          f"with {needs})")
    manifest = dataset.build_from_lists(lists, a.out or dataset.SNAPSHOT_DIR)
    say(json.dumps(manifest, indent=2))
    return 0


def cmd_vocab(s: ToolSettings, a: argparse.Namespace) -> int:
    from corpora import samples
    from enrich.errors import InvalidItem
    from enrich.schemas import VocabEntry, decode_vocab, encode, now_ms
    from ops.kafka.clients import publish

    if a.action == "prototypes":
        from ops.builds import build_prototypes

        build_prototypes(s, a.out, say)
        return 0
    if a.action == "prior":
        from ops.builds import build_tag_prior

        build_tag_prior(s, a.out, say, emoji_dir=a.emoji)
        return 0
    if a.file and a.debtags:
        raise EnrichError("--file and --debtags name two vocabularies: pick one")
    if a.debtags:
        from ops.local.stack import debtags_vocabulary

        entries = debtags_vocabulary(s)
    elif a.file:
        try:
            rows = json.loads(Path(a.file).read_text())
            entries = [VocabEntry(tag=r["tag"], facet=r.get("facet", ""), description=r.get("description", ""),
                                  updated_at=now_ms()) for r in rows]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EnrichError(f"{a.file}: expected a JSON list of {{\"tag\": ..., \"facet\": ...}}: {exc}") from exc
    else:
        entries = samples.vocab_entries()
    for e in entries:  # what the workers would skip is refused here, with the reason
        try:
            decode_vocab(encode(e))
        except InvalidItem as err:
            raise EnrichError(f"tag {e.tag[:80]!r}: {err}; workers would skip it") from None
    n = publish(s, TAGS_VOCAB, [(e.tag.encode(), encode(e)) for e in entries])
    say(f"published {n} tags to {s.topic(TAGS_VOCAB)}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    da = sub.add_parser("data", help="build a dataset snapshot: debtags (text, tags, relations), debtags-zh (the same "
                                     "packages in Chinese, from Debian's zh_CN translations), appstream "
                                     "(desktop applications with icons, joined with debtags) or appstream-zh (the "
                                     "same apps' zh_CN names, summaries and descriptions, and the menu categories' "
                                     "zh_CN names)")
    da.add_argument("action", choices=["debtags", "debtags-zh", "appstream", "appstream-zh"])
    da.add_argument("--fetch", action="store_true", help="apt-get update into a private lists dir first")
    da.add_argument("--lists", type=Path, help="apt lists dir holding the indexes (debtags: *_Packages and "
                                               "*_Translation-en; debtags-zh: *_Packages and *_Translation-zh_CN; "
                                               "appstream: the DEP-11 components and icons; appstream-zh: the DEP-11 "
                                               "components and gnome-menus_*.deb)")
    da.add_argument("--out", type=Path, help="snapshot dir (default: the one shipped in corpora/data/)")
    da.set_defaults(fn=cmd_data)
    v = sub.add_parser("vocab", help="publish tags to tags.vocab, or build tag prototypes or the tag prior")
    v.add_argument("action", choices=["load", "prototypes", "prior"])
    v.add_argument("--file", help="load: JSON list of {tag, facet, description} (default: the sample vocabulary)")
    v.add_argument("--debtags", action="store_true",
                   help="load: the debtags vocabulary with the shipped prototypes (for the exported embedder)")
    v.add_argument("--emoji", type=Path, help="prior: also fit the open-vocabulary head on the validation emoji of "
                                              "this unpacked emoji-datasource-google package (image-only items)")
    v.add_argument("--out", type=Path, help="prototypes, prior: artifact to write (default: the shipped one)")
    v.set_defaults(fn=cmd_vocab)
