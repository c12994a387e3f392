"""``diffumamba serve --stdio``: a correction worker that loads its model once and answers one JSON line per request.

Protocol (docs/correction.md): after loading, the worker prints ``{"ready": true, ...}``; then each request line
``{"id": ..., "command": "correct", "image": PATH, "mask": PATH|null, "output": PATH, "clicks": [...],
"coordinate_system": ..., "fixed_slices": [...]}`` gets one reply line with the same id: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``. A bad request never ends the worker; ``{"command": "quit"}`` or the end of input
does. Replies go to stdout only; nothing else is printed there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .correct import add_model_arguments, model_paths


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "serve", help="a correction worker: model loaded once, one JSON request per line (for the Slicer module)",
        description="Load a correction model once (by default the built-in click lesion model) and answer "
                    "correction requests, one JSON object per line on stdin, one reply per line on stdout "
                    "(docs/correction.md).")
    parser.add_argument("--stdio", action="store_true", required=True, help="requests on stdin, replies on stdout")
    add_model_arguments(parser)
    parser.set_defaults(run=run, leave_at_once=True)     # cli.program: no interpreter teardown after the last reply


def run(args: argparse.Namespace) -> int:
    from .correction_service import CorrectionService

    started = time.perf_counter()
    models = model_paths(args.model)
    service = CorrectionService(models, args.device)
    service.corrector.warm_up()
    try:
        reply({"ready": True, "seconds": round(time.perf_counter() - started, 3),
               "model": [str(m) for m in models]})
        for line in sys.stdin:
            if not line.strip():
                continue
            answer = handle(service, line)
            reply(answer)
            if answer.get("quit"):
                break
    except BrokenPipeError:
        _reader_gone()
    return 0


def _reader_gone() -> None:
    """Nobody reads the replies any more (the client closed its end): stop as at the end of input, with one line
    on stderr and no traceback, also not from the interpreter flushing stdout at exit."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    print("diffumamba serve: the reader of stdout went away; stopping", file=sys.stderr)


def handle(service, line: str) -> dict:
    """The reply to one request line; every user error becomes ``{"ok": false, "error": ...}``.

    The line is validated into a typed ``CorrectJob`` before any work (``correction.request``)."""
    from ..user_errors import describe, is_user_error
    from ..correction.request import decode_json, parse_job

    request_id = None
    try:
        value = decode_json(line, "request")
        request_id = value.get("id") if isinstance(value, dict) else None
        command = value.get("command") if isinstance(value, dict) else None
        if command == "quit":
            return {"id": request_id, "ok": True, "quit": True}
        if command == "ping":
            return {"id": request_id, "ok": True}
        if command != "correct":
            raise ValueError(f"unknown command {repr(command)[:40]}; use correct, ping or quit")
        source = f"request {json.dumps(request_id)[:40]}"
        return {"id": request_id, "ok": True, **service.correct(parse_job(value, source), source)}
    except Exception as err:
        if not is_user_error(err):
            raise
        return {"id": request_id, "ok": False, "error": describe(err)}


def reply(value: dict) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()
