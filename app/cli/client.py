"""`ctrw-service submit | status | results`: drive a running service through `ctrw.client`.

The service is CTRW_API_URL (or --url), the key CTRW_API_KEY (or --key). Imports no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from ctrw.client import APIError, Client, JobFailed

__all__ = ["COMMANDS", "add_parsers"]


def add_parsers(sub: Any) -> None:
    """Add the client subcommands to ``ctrw-service``'s subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the service (default CTRW_API_URL or http://127.0.0.1:8000)")
    common.add_argument("--key", help="API key (default CTRW_API_KEY)")
    p = sub.add_parser(
        "submit", parents=[common], help="submit a job from a YAML or JSON file; prints its id"
    )
    p.add_argument("config", help="YAML/JSON body: a train config, or an attack or suite request with --kind")
    p.add_argument("--kind", choices=("train", "attack", "suite"), default="train")
    p.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    p = sub.add_parser("status", parents=[common], help="a job's status and progress (JSON)")
    p.add_argument("job_id")
    p = sub.add_parser("results", parents=[common], help="a finished job's results table")
    p.add_argument("job_id")
    p.add_argument("--format", choices=("json", "csv", "markdown", "latex"), default="markdown")
    p.add_argument("--table", help="suites: one of its tables")


def _load(path: str, kind: str) -> dict[str, Any]:
    """The file validated like the server would (leniently: YAML reads 1e-3 as a string), as
    the JSON body; a bad file stops here with the field named."""
    from app.schemas import AttackJobCreate
    from ctrw.config import TrainConfig, load_config_file
    from ctrw.paper import SuiteRequest

    model = {"train": TrainConfig, "attack": AttackJobCreate, "suite": SuiteRequest}[kind]
    return load_config_file(path, model).model_dump(mode="json")


def _submit(args: argparse.Namespace, _settings: Any) -> int:
    from ctrw.config import ConfigError

    try:
        body = _load(args.config, args.kind)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    with Client(args.url, args.key) as client:
        job = _call(lambda: client.submit(args.kind, body))
        if job is None:
            return 1
        print(job.id)
        if args.wait:
            try:
                job.wait(progress=True)
            except JobFailed as e:
                print(e, file=sys.stderr)
                return 1
    return 0


def _status(args: argparse.Namespace, _settings: Any) -> int:
    with Client(args.url, args.key) as client:
        job = _call(lambda: client.job(args.job_id))
    if job is None:
        return 1
    keys = (
        "id",
        "kind",
        "status",
        "progress",
        "error",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
    )
    out = {k: job.data.get(k) for k in keys}
    if job.data.get("suite"):
        out["suite"] = {k: job.data["suite"][k] for k in ("total", "done", "percent", "counts")}
    print(json.dumps(out, indent=2))
    return 0


def _results(args: argparse.Namespace, _settings: Any) -> int:
    with Client(args.url, args.key) as client:

        def fetch() -> str:
            j = client.job(args.job_id)
            if args.format == "json":
                return json.dumps(j.results(args.table).data, indent=2)
            return j.results_text(args.format, args.table)

        text = _call(fetch)
    if text is None:
        return 1
    print(text.rstrip("\n"))
    return 0


def _call(fn: Any) -> Any:
    try:
        return fn()
    except APIError as e:
        print(f"error {e.status_code}: {e.message}", file=sys.stderr)
    except httpx.TransportError as e:  # connection refused, DNS, timeout
        print(f"cannot reach the service: {e}", file=sys.stderr)
    return None


COMMANDS = {"submit": _submit, "status": _status, "results": _results}
