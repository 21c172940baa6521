"""`enrich demo`, `enrich worker`, `enrich stack up|down`: the service on this machine."""

from __future__ import annotations

import argparse
import sys

from ops.cli.console import say
from ops.settings import ToolSettings


def cmd_demo(s: ToolSettings, a: argparse.Namespace) -> int:
    from ops.local.demo import run_demo

    return run_demo(s, n_items=a.items, wait=not a.no_wait and sys.stdin.isatty())


def cmd_worker(s: ToolSettings, a: argparse.Namespace) -> int:
    from streams.worker import run_worker

    run_worker(s)
    return 0


def cmd_stack(s: ToolSettings, a: argparse.Namespace) -> int:
    from ops.local import stack

    if a.action == "up":
        stack.ensure_models(s, progress=say)
        stack.ensure_codebook(s, progress=say)
        stack.stack_up(s, say)
        say(f"local stack up: broker 127.0.0.1:{s.broker_port}, triton gRPC 127.0.0.1:{s.triton_grpc_port}")
    else:
        stack.stack_down(s, say)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="run the whole path on the embedded local stack")
    d.add_argument("--items", type=int, default=30,
                   help="items to take (small preset: held-out apps; two thirds also go without their icon)")
    d.add_argument("--no-wait", action="store_true",
                   help="stop at once instead of keeping the stack and the inspector page up until Enter "
                        "(the default in a terminal)")
    d.set_defaults(fn=cmd_demo)
    sub.add_parser("worker", help="run a Faust worker").set_defaults(fn=cmd_worker)
    st = sub.add_parser("stack", help="start/stop the local broker + Triton in the background")
    st.add_argument("action", choices=["up", "down"])
    st.set_defaults(fn=cmd_stack)
