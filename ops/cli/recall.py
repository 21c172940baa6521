"""`enrich recall serve|tags|neighbors`: the reference recall indexes and their page."""

from __future__ import annotations

import argparse
import json

from enrich.errors import EnrichError
from ops.cli.console import say
from ops.settings import ToolSettings


def _ask_server(url: str, path: str) -> list[dict]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise EnrichError(f"{url}: {json.loads(exc.read()).get('error', exc.reason)}") from None
    except OSError as exc:
        raise EnrichError(f"cannot reach the recall server at {url} ({exc}); start it with `enrich recall serve`, "
                          "or leave --server out to read the topics directly") from None


def cmd_recall(s: ToolSettings, a: argparse.Namespace) -> int:
    from urllib.parse import quote

    from ops.recall.server import RecallIndexes, serve

    if a.action == "serve":
        import signal
        import threading

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        say(f"recall api on http://{s.recall_bind}:{a.port} (GET /tags/<tag>, GET /neighbors/<item>, POST /neighbors)")
        serve(s, a.port, stop=stop)
        return 0
    if a.target is None:
        raise EnrichError(f"`enrich recall {a.action}` needs a {'tag' if a.action == 'tags' else 'item id'}")
    if a.action == "tags":
        path = f"/tags/{quote(a.target, safe='')}?k={a.k}"
    else:
        path = f"/neighbors/{quote(a.target, safe='')}?k={a.k}&by={a.by}"
    if a.server:
        hits = _ask_server(a.server, path)
    else:
        idx = RecallIndexes.caught_up(s)
        hits = idx.tag_query(a.target, a.k) if a.action == "tags" else idx.neighbor_query(a.target, a.k, a.by)
    if a.json:
        say(json.dumps(hits, indent=2))
    elif not hits:
        say(f"no {'items tagged' if a.action == 'tags' else 'neighbours of'} {a.target!r}")
    for h in hits if not a.json else []:
        if a.action == "tags":
            say(f"{h['item_id']:<32} grade {h['grade']}  prob {h['prob']:.3f}  score {h['score']:.3f}")
        else:
            say(f"{h['item_id']:<32} {'cosine' if a.by == 'ann' else 'shared prefix'} {h['score']:.3f}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("recall", help="reference recall indexes: serve them, or query tags / neighbours")
    r.add_argument("action", choices=["serve", "tags", "neighbors"])
    r.add_argument("target", nargs="?", help="the tag (tags) or the item id (neighbors)")
    r.add_argument("--k", type=int, default=10, help="results to return")
    r.add_argument("--by", choices=["ann", "cf", "sid"], default="ann",
                   help="neighbors: the content-vector index (ann), the CF-tuned vector index (cf, when workers "
                        "run a CF adapter) or semantic-ID prefix matching (sid)")
    r.add_argument("--server", help="ask a running `enrich recall serve` (e.g. http://127.0.0.1:8080) instead of "
                                    "reading the topics")
    r.add_argument("--port", type=int, default=8080, help="serve: HTTP port")
    r.add_argument("--json", action="store_true", help="print the hits as JSON")
    r.set_defaults(fn=cmd_recall)
