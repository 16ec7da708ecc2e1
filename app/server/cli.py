"""Headless server: `neox-writer --server --model PATH [--host H] [--port P] [--api-key K]`
(also `python -m app.server --model PATH ...`). Loads the model, serves until Ctrl+C."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from app.server.http import ApiServer, ServerConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neox-writer --server",
                                description="Serve a local GPT-NeoX model over KoboldCpp- and OpenAI-compatible APIs.")
    p.add_argument("--server", action="store_true", help=argparse.SUPPRESS)   # the app's dispatch flag
    p.add_argument("--model", required=True, help="ggml model file (.bin)")
    p.add_argument("--tokenizer", help="tokenizer.json (default: one beside the model, else rebuilt from its vocab)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs --api-key)")
    p.add_argument("--port", type=int, default=5001, help="port (default 5001, KoboldCpp's)")
    p.add_argument("--api-key", default=os.environ.get("NEOX_SERVER_API_KEY"),
                   help="key clients must send as 'Authorization: Bearer KEY' or 'X-Api-Key: KEY' "
                        "(or set NEOX_SERVER_API_KEY)")
    p.add_argument("--allow-any-origin", action="store_true",
                   help="let web pages from any origin call the server (default: localhost pages and file://)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="also allow this browser origin, e.g. https://lite.koboldai.net (repeatable)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer to this Host name (repeatable)")
    p.add_argument("--max-length", type=int, default=1024, help="cap on tokens generated per request (default 1024)")
    p.add_argument("--max-n", type=int, default=8, help="cap on OpenAI's n (default 8)")
    p.add_argument("--queue", type=int, default=6, help="requests that may wait behind the running one (default 6)")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: the engine's choice)")
    p.add_argument("--backend", default="auto", choices=["auto", "fast", "reference"], help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="do not log each request")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    config = ServerConfig(host=args.host, port=args.port, api_key=args.api_key or None,
                          allow_any_origin=args.allow_any_origin, allowed_origins=tuple(args.allow_origin),
                          allowed_hosts=tuple(args.allow_host), max_length=args.max_length, max_n=args.max_n,
                          queue_depth=args.queue)
    try:
        config.validate()
        from app.server.worker import EngineWorker
        worker = EngineWorker.load(args.model, args.tokenizer, backend=args.backend, threads=args.threads)
        server = ApiServer(worker, config)
        url = server.start()
    except (ValueError, OSError) as e:
        print(f"neox-writer --server: {e}", file=sys.stderr)
        return 2
    print(f"Serving {worker.model_name} (context {worker.n_ctx}) on {url}", flush=True)
    print(f"  KoboldCpp API: {url}/api   OpenAI API: {url}/v1", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    print("Stopping.", flush=True)
    server.stop()
    return 0
