"""GET /jobs at scale: a fresh PostgreSQL database with 100k jobs, the real API, 8 concurrent clients.

    .venv/bin/python benchmarks/list_bench.py                  # 100k jobs, 8 clients, 2,000 requests
    .venv/bin/python benchmarks/list_bench.py --json out.json  # also the numbers as JSON

What it does: creates a database, migrates it (`python -m app.cli.main migrate` of `--app-root`, so an
older checkout measures its own schema), bulk-loads jobs with COPY (train jobs with full configs,
attack jobs on them, suites with their sub-jobs; progress, environment and results summary filled
in as a worker leaves them), runs VACUUM ANALYZE (what autovacuum does to a table this size within
a minute), starts `python -m app.cli.main serve --no-worker` with CTRW_BROKER_URL set (no embedded
worker) and access logs off, then walks every page with `next_cursor` (checking that each job is
seen exactly once) and times `--requests` list requests from `--clients` threads, each with its
own keep-alive connection. The query mix, in turn: first page; status filter; status + kind (the
README's example); kind filter; a suite's sub-jobs; a deep keyset page; a deep keyset page with a
status filter; an offset page. Latency is client-side wall time, response read, not parsed. The
clients run on the same machine as the API and PostgreSQL: on a 2-core machine they compete with
the server, so the numbers are an upper bound of the server's own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ctrw.config import AttackJobConfig, TrainConfig  # noqa: E402  (pure pydantic: no torch)
from ctrw.paper import SuiteRequest  # noqa: E402

PG_ADMIN_URL = os.environ.get("CTRW_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CTRW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
COLUMNS = (
    "id", "kind", "status", "config", "config_hash", "train_job_id", "parent_id", "cancel_requested",
    "attempts", "worker", "progress", "error", "environment", "summary", "created_at", "updated_at",
    "started_at", "finished_at", "heartbeat_at",
)  # fmt: skip
ENVIRONMENT = {
    "python": "3.12.3", "torch": "2.5.1+cu124", "torchvision": "0.20.1", "safetensors": "0.4.5",
    "cuda": "12.4", "ctrw": "0.3.0", "torchattacks": "3.5.1", "device": "NVIDIA H100 80GB HBM3",
    "code_revision": "0123456789abcdef0123456789abcdef01234567", "hostname": "worker-gpu-3",
}  # fmt: skip


# --------------------------------------------------------------------------- data


def _train_configs(rng: random.Random) -> list[dict[str, Any]]:
    """Validated training configs with every default filled in, as the API stores them."""
    out = []
    for model in ("resnet18", "wrn34_10", "small_cnn"):
        for dataset in ("cifar10", "cifar100"):
            for variant in ("baseline", "unconstrained", "fixed_std", "fixed_sigma", "ctrw"):
                cfg = TrainConfig.model_validate(
                    {
                        "name": f"{variant}-{model}-{dataset}",
                        "variant": variant,
                        "model": {"name": model},
                        "data": {"dataset": dataset, "num_classes": 100 if dataset == "cifar100" else 10},
                        "optim": {"epochs": rng.choice((50, 100, 200))},
                        "random_weight": {"position": rng.randrange(0, 4)},
                    }
                )
                out.append(cfg.model_dump(mode="json"))
    return out


def _row(job_id: str, kind: str, status: str, config: dict[str, Any], created: datetime, rng: random.Random,
         train_job_id: str | None = None, parent_id: str | None = None) -> tuple[Any, ...]:  # fmt: skip
    config_json = json.dumps(config, sort_keys=True)
    started = finished = progress = environment = summary = error = worker = None
    attempts = 0
    if status != "queued" and status != "waiting":
        started, attempts, worker = created + timedelta(seconds=rng.uniform(1, 600)), 1, "worker-gpu-3:4711"
        environment = json.dumps(ENVIRONMENT)
        epochs = config.get("optim", {}).get("epochs", 1)
        done = epochs if status == "succeeded" else rng.randrange(0, epochs + 1)
        progress = json.dumps({
            "phase": status if status != "running" else "train", "epoch": done, "epochs": epochs,
            "batch": 351, "batches": 352, "detail": "", "percent": 100.0 * done / max(epochs, 1),
            "eta_seconds": None if status != "running" else rng.uniform(10, 9000),
            "last_metrics": {"train_loss": rng.uniform(0.5, 2), "train_adv_acc": rng.uniform(0.3, 0.6),
                             "val_clean_acc": rng.uniform(0.7, 0.9), "val_pgd_acc": rng.uniform(0.4, 0.6),
                             "sigma_sum": rng.uniform(100, 3000)},
        })  # fmt: skip
    if status in ("succeeded", "failed", "cancelled"):
        finished = started + timedelta(minutes=rng.uniform(1, 300))  # type: ignore[operator]
    if status == "succeeded":
        summary = json.dumps({
            "best_epoch": rng.randrange(1, 200), "best_val_pgd_acc": rng.uniform(0.4, 0.6),
            "seconds": rng.uniform(60, 20000), "sigma_sum": rng.uniform(100, 3000),
            "diagnostics": [{"check": "gradient_obfuscation", "passed": True, "detail": "pgd >= fgsm"}],
        })  # fmt: skip
    if status == "failed":
        error = "RuntimeError: CUDA error: an illegal memory access was encountered"
    updated = finished or started or created
    return (job_id, kind, status, config_json, uuid.uuid4().hex * 2, train_job_id, parent_id,
            status == "cancelled", attempts, worker, progress, error, environment, summary,
            created, updated, started, finished, None)  # fmt: skip


def _finished_status(rng: random.Random) -> str:
    return rng.choices(("succeeded", "failed", "cancelled"), (85, 10, 5))[0]


def generate_rows(n: int, seed: int) -> list[tuple[Any, ...]]:
    """n jobs over the last year, oldest first; the newest 300 are still waiting, queued or running.
    About 60% train, 30% attack (on an earlier succeeded train job), 1% suites with 9 sub-jobs."""
    rng = random.Random(seed)
    trains = _train_configs(rng)
    attack = AttackJobConfig().model_dump(mode="json")
    suites = [SuiteRequest(suite=s).model_dump(mode="json") for s in ("table1", "table2", "table4", "fig3b")]
    created = datetime.now(UTC) - timedelta(days=365)
    step = timedelta(days=365) / n
    rows: list[tuple[Any, ...]] = []
    succeeded_trains: list[str] = []

    def status_at(i: int) -> str:
        return _finished_status(rng) if i < n - 300 else rng.choice(("waiting", "queued", "running"))

    while len(rows) < n:
        created += step * rng.uniform(0.5, 1.5)
        i, draw = len(rows), rng.random()
        if draw < 0.01 and n - i > 10:
            suite_id, status = uuid.uuid4().hex, status_at(i)
            rows.append(_row(suite_id, "suite", status, rng.choice(suites), created, rng))
            for _ in range(9):
                created += timedelta(microseconds=rng.randrange(50, 500))
                cfg = {**rng.choice(trains), "seed": rng.randrange(1 << 30)}
                rows.append(_row(uuid.uuid4().hex, "train", status, cfg, created, rng, parent_id=suite_id))
        elif draw < 0.31 and succeeded_trains:
            cfg = {**attack, "evaluation": {**attack["evaluation"], "seed": rng.randrange(1 << 30)}}
            rows.append(_row(uuid.uuid4().hex, "attack", status_at(i), cfg, created, rng,
                             train_job_id=rng.choice(succeeded_trains)))  # fmt: skip
        else:
            job_id, status = uuid.uuid4().hex, status_at(i)
            cfg = {**rng.choice(trains), "seed": rng.randrange(1 << 30)}
            rows.append(_row(job_id, "train", status, cfg, created, rng))
            if status == "succeeded":
                succeeded_trains.append(job_id)
    return rows[:n]


def load(url: str, rows: list[tuple[Any, ...]]) -> float:
    """COPY the rows into job; VACUUM ANALYZE. Returns the seconds taken."""
    t0 = time.perf_counter()
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY job ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE job")
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- load


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(url: str, app_root: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTRW_")}
    env |= {"CTRW_DATABASE_URL": url, "CTRW_BROKER_URL": REDIS_URL, "CTRW_LOG_LEVEL": "WARNING",
            "CTRW_RUNS_DIR": str(tmp / "runs"), "CTRW_DATA_DIR": str(tmp / "data")}  # fmt: skip
    log = (tmp / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli.main", "serve", "--port", str(port), "--no-worker", "--no-migrate"],
        cwd=app_root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"API exited:\n{(tmp / 'api.log').read_text()}")
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("API did not come up in 60 s")


def walk(client: httpx.Client, expected: int) -> tuple[list[str], float]:
    """Every page of 500 with next_cursor; each job exactly once. Returns cursors and seconds."""
    t0, seen, cursors, params = time.perf_counter(), set(), [], {"limit": 500}
    while True:
        page = client.get("/jobs", params=params).raise_for_status().json()
        ids = [j["id"] for j in page["data"]]
        assert not seen.intersection(ids), "a job appeared on two pages"
        seen.update(ids)
        if page["next_cursor"] is None:
            break
        cursors.append(page["next_cursor"])
        params = {"limit": 500, "cursor": page["next_cursor"]}
    assert len(seen) == expected, f"walked {len(seen)} jobs of {expected}"
    return cursors, time.perf_counter() - t0


def query_mix(suite_id: str, cursors: list[str]) -> list[tuple[str, Any]]:
    mix: list[tuple[str, Any]] = [
        ("first page", lambda rng: {"limit": 50}),
        ("status", lambda rng: {"status": "succeeded", "limit": 50}),
        ("status+kind", lambda rng: {"status": "running", "kind": "train", "limit": 20}),
        ("kind", lambda rng: {"kind": "attack", "limit": 50}),
        ("suite sub-jobs", lambda rng: {"parent_id": suite_id}),
        ("offset 2000", lambda rng: {"limit": 50, "offset": 2000}),
    ]
    if cursors:  # an API without keyset pagination (the old one) has none
        deep = cursors[len(cursors) // 2 :]
        mix += [
            ("deep cursor", lambda rng: {"limit": 50, "cursor": rng.choice(deep)}),
            ("deep cursor+status", lambda rng: {"status": "failed", "limit": 50, "cursor": rng.choice(deep)}),
        ]
    return mix


def run_clients(base: str, mix: list[tuple[str, Any]], clients: int, requests: int, seed: int
                ) -> list[tuple[str, float, int, int]]:  # fmt: skip
    """`requests` list requests from `clients` threads started together; (query, s, status, bytes)."""
    results: list[tuple[str, float, int, int]] = []
    lock, barrier = threading.Lock(), threading.Barrier(clients)

    def client(c: int) -> None:
        rng, mine = random.Random(seed + c), []
        with httpx.Client(base_url=base, timeout=60) as http:
            barrier.wait()
            for i in range(c, requests, clients):
                name, params = mix[i % len(mix)]
                t0 = time.perf_counter()
                r = http.get("/jobs", params=params(rng))
                body = r.read()
                mine.append((name, time.perf_counter() - t0, r.status_code, len(body)))
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def summarize(results: list[tuple[str, float, int, int]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[tuple[str, float, int, int]]] = {"all": results}
    for r in results:
        groups.setdefault(r[0], []).append(r)
    out = {}
    for name, rs in groups.items():
        ms = [r[1] * 1000 for r in rs]
        out[name] = {"n": len(rs), "errors": sum(r[2] != 200 for r in rs), "p50_ms": _pct(ms, 50),
                     "p95_ms": _pct(ms, 95), "p99_ms": _pct(ms, 99), "max_ms": max(ms),
                     "kb": sum(r[3] for r in rs) / len(rs) / 1024}  # fmt: skip
    return out


# --------------------------------------------------------------------------- main


def _machine(app_root: Path) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    rev = subprocess.run(["git", "-C", str(app_root), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(), "commit": rev or "unknown",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=2000, help="timed requests, all clients together")
    p.add_argument("--warmup", type=int, default=160, help="untimed requests first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--app-root", type=Path, default=ROOT, help="the checkout whose API and migrations run")
    p.add_argument("--database-url", help="an already loaded database (skips create, migrate and load)")
    p.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    p.add_argument("--json", type=Path, help="write the numbers here too")
    p.add_argument("--commit", help="the revision to report when --app-root is not a git checkout")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="list-bench-"))
    machine = _machine(args.app_root)
    machine["commit"] = args.commit or machine["commit"]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    url, created_db = args.database_url, False
    if url is None:
        name = f"ctrw_listbench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url, created_db = (
            make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False),
            True,
        )
    proc = None
    try:
        if created_db:
            env = {k: v for k, v in os.environ.items() if not k.startswith("CTRW_")} | {
                "CTRW_DATABASE_URL": url
            }
            subprocess.run(
                [sys.executable, "-m", "app.cli.main", "migrate"], cwd=args.app_root, env=env, check=True
            )
            t0 = time.perf_counter()
            rows = generate_rows(args.jobs, args.seed)
            print(f"generated {len(rows)} jobs in {time.perf_counter() - t0:.1f} s", flush=True)
            print(f"COPY + VACUUM ANALYZE: {load(url, rows):.1f} s", flush=True)
            del rows
        engine = create_engine(url)
        with engine.connect() as conn:
            n = conn.scalar(text("SELECT count(*) FROM job"))
            sizes = conn.execute(text(
                "SELECT pg_size_pretty(pg_relation_size('job')), pg_size_pretty(pg_total_relation_size('job')),"
                " pg_size_pretty(pg_indexes_size('job'))"
            )).one()  # fmt: skip
            suite_id = conn.scalar(text("SELECT parent_id FROM job WHERE parent_id IS NOT NULL LIMIT 1"))
        engine.dispose()
        print(f"{n} jobs; table {sizes[0]}, with TOAST and indexes {sizes[1]} (indexes {sizes[2]})")
        proc, base = start_api(url, args.app_root, tmp)
        with httpx.Client(base_url=base, timeout=120) as http:
            first = http.get("/jobs", params={"limit": 1}).raise_for_status().json()
            cursors, walk_s = walk(http, n) if "next_cursor" in first else ([], 0.0)
        if cursors:
            print(f"walked all {n} jobs once each with next_cursor (pages of 500) in {walk_s:.1f} s")
        mix = query_mix(suite_id, cursors)
        run_clients(base, mix, args.clients, args.warmup, args.seed + 1000)
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        results = run_clients(base, mix, args.clients, args.requests, args.seed)
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        if created_db and not args.keep_db:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
        elif created_db:
            print(f"kept database {url}")
        admin.dispose()

    stats = summarize(results)
    print(f"\n{machine['cpu']}, {machine['cores']} cores; commit {machine['commit']}; {machine['date']}")
    print(f"{args.clients} clients, {len(results)} requests in {wall:.1f} s ({len(results) / wall:.0f} req/s); "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")  # fmt: skip
    print(f"\n{'query':<20}{'n':>6}{'err':>5}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'KB':>8}")
    for name, s in stats.items():
        print(f"{name:<20}{s['n']:>6}{s['errors']:>5}{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}"
              f"{s['p99_ms']:>9.1f}{s['max_ms']:>9.1f}{s['kb']:>8.1f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine, "jobs": n, "clients": args.clients, "wall_s": wall, "walk_s": walk_s,
            "load_before": load_before, "load_after": load_after, "sizes": list(sizes), "stats": stats,
        }, indent=2))  # fmt: skip
    return 1 if stats["all"]["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
