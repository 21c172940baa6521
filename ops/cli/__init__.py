"""`enrich`: the command line of the service, one module per command group.

  enrich demo                     the whole path on the embedded local stack            (local)
  enrich worker                   run a Faust worker (settings from ENRICH_* variables)  (local)
  enrich stack up|down            start/stop the local broker + Triton in the background (local)
  enrich topics create|spec|check  create the topics as specified, print the spec, or report drift (exit 1)  (kafka)
  enrich publish                  publish sample items to items.new                      (kafka)
  enrich tail TOPIC               decoded records of a topic (--from-beginning, --key ID, --json)  (kafka)
  enrich backfill                 replay items into a shadow deployment after a model change  (kafka)
  enrich audit                    every input enriched or dead-lettered once, no conflicting duplicates  (kafka)
  enrich models export|repository|bundle|train-tagger|train-fusion|train-cf   models and their training  (models)
  enrich codebook fit|eval        train / evaluate the semantic-ID codebook (RQ-VAE)     (models)
  enrich data debtags|appstream   build a dataset snapshot (real items, tags, relations; listings and icons)  (data)
  enrich vocab load|prototypes|prior  publish tags to tags.vocab; build tag prototypes or the tag prior  (data)
  enrich bench                    throughput and latency on a private local stack       (measure)
  enrich eval                     quality of the small presets on the held-out splits, with baselines  (measure)
  enrich capacity --rate R        partitions, workers, GPUs, broker throughput for R new items/s  (measure)
  enrich recall serve|tags|neighbors  reference recall indexes fed from recall.tags / recall.neighbors  (recall)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pydantic import ValidationError

from enrich.errors import EnrichError
from enrich.logs import configure
from ops.cli import data, kafka, local, measure, models, recall
from ops.settings import ToolSettings

GROUPS = (local, kafka, models, data, measure, recall)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="enrich", description="Multimodal streaming enrichment.",
                                epilog="Settings come from ENRICH_* environment variables (docs/configuration.md).")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = ToolSettings()
    except ValidationError as exc:
        print(f"enrich: invalid settings:\n{exc}\nFix the ENRICH_* environment variables named above.",
              file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_json)
    for line in ToolSettings.unknown_variables(os.environ):
        logging.getLogger("enrich").warning("%s", line)
    try:
        return int(args.fn(settings, args) or 0)
    except EnrichError as exc:  # expected: bad input, configuration or deployment; the message says the fix
        print(f"enrich {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
