"""`python -m worker` (what `ctrw-service worker` and `serve`'s embedded worker run): the
embedded poller, or the Celery worker if CTRW_BROKER_URL is set. Its own entry point, so that
the `app` package never imports `worker` (and the API process never imports torch)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pydantic import ValidationError

from app.core.migrate import upgrade
from app.core.settings import Settings, get_settings

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctrw-service worker", description=__doc__)
    parser.add_argument("--no-migrate", action="store_true", help="skip `alembic upgrade head`")
    parser.add_argument(
        "--queues",
        help="the queues to serve, comma-separated (cpu, gpu, gpu-x4, gpu-x4-h100); "
        "default: CTRW_WORKER_QUEUES, or what this host's GPUs can run",
    )
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)  # set by serve: stop when it dies
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
        if args.queues is not None:
            settings = Settings.model_validate({**settings.model_dump(), "worker_queues": args.queues})
    except ValidationError as exc:
        print(f"invalid CTRW_* settings:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _set_threads(settings.torch_threads)
    if not args.no_migrate:
        upgrade(settings)
    if settings.embedded:
        from worker.embedded import serve_forever

        serve_forever(settings, parent_pid=args.parent_pid)
        return 0
    if args.queues is not None:  # worker.celery_app reads the settings when imported
        get_settings.cache_clear()
        os.environ["CTRW_WORKER_QUEUES"] = settings.worker_queues or ""
    from worker.celery_app import celery_app, queues

    celery_app.worker_main(
        ["worker", "-Q", ",".join(queues), "-P", "solo", "-c", "1", "--loglevel", settings.log_level]
    )
    return 0


def _set_threads(threads: int | None) -> None:
    """torch's CPU threads, set deliberately (ctrw.threads): CTRW_TORCH_THREADS, or the usable
    cores shared by the workers on this host (one worker per GPU, one without a GPU)."""
    import torch

    from ctrw.threads import set_torch_threads

    n = set_torch_threads(threads, processes=max(1, torch.cuda.device_count()))
    logging.getLogger(__name__).info("torch uses %d CPU threads", n)


if __name__ == "__main__":
    sys.exit(main())
