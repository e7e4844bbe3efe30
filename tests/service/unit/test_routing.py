"""Routing without service processes: queue names from a job's resources, their validation (the
config's and CTRW_WORKER_QUEUES'), a worker's default queues, and the message a queued job gets
when no worker serves its queue (SQLite in a temporary directory)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from app.core.db import session_factory
from app.core.migrate import upgrade
from app.core.queue import (
    Routed,
    describe_queue,
    host_queues,
    parse_queue,
    parse_queues,
    queue_name,
    queue_of,
)
from app.core.settings import Settings
from app.models import Job, JobKind, JobStatus
from app.services import execution
from app.services.scheduling import dispatch_ready, routed
from ctrw.config import AttackJobConfig, TrainConfig, config_hash
from worker.routing import gpu_kind


@pytest.mark.parametrize(
    ("gpus", "kind", "queue"),
    [
        (0, None, "cpu"),
        (1, None, "gpu"),
        (4, None, "gpu-x4"),
        (1, "h100", "gpu-h100"),
        (8, "a100", "gpu-x8-a100"),
    ],
)
def test_queue_names_follow_the_resources(gpus: int, kind: str | None, queue: str) -> None:
    assert queue_name(gpus, kind) == queue == parse_queue(queue)
    config = TrainConfig.model_validate(
        {"resources": {"gpus": gpus, "gpu_kind": kind}, "distributed": {"nproc_per_node": max(gpus, 1)}}
    )
    assert queue_of(config.model_dump(mode="json")) == queue


def test_a_config_without_resources_goes_to_the_gpu_queue_and_resources_leave_the_hash_alone() -> None:
    assert queue_of({}) == "gpu"  # a suite, a job stored before routing
    plain = TrainConfig()
    assert queue_of(plain.model_dump(mode="json")) == "gpu"
    moved = TrainConfig.model_validate({"resources": {"gpu_kind": "h100"}})
    assert config_hash(moved) == config_hash(plain)
    assert TrainConfig.model_validate({"device": "cpu"}).resources.gpus == 0  # cpu jobs: cpu queue
    assert TrainConfig.model_validate({"distributed": {"nproc_per_node": 8}}).resources.gpus == 8
    assert AttackJobConfig.model_validate({"resources": {"gpus": 2}}).resources.gpus == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"resources": {"gpus": 17}}, "resources.gpus"),
        ({"resources": {"gpus": -1}}, "resources.gpus"),
        ({"resources": {"gpu_kind": "H100!"}}, "resources.gpu_kind"),
        ({"resources": {"gpus": 0, "gpu_kind": "h100"}}, "resources.gpu_kind"),
        ({"resources": {"gpus": 4}}, "distributed.nproc_per_node"),
        ({"distributed": {"nproc_per_node": 3}, "optim": {"batch_size": 128}}, "optim.batch_size"),
        ({"resources": {"gpus": 1}, "distributed": {"nproc_per_node": 2}}, "distributed.nproc_per_node"),
        ({"resources": {"gpu_kind": "x4"}}, "resources.gpu_kind"),
        ({"resources": {"cpus": 2}}, "cpus"),
    ],
)
def test_bad_resources_are_refused_naming_the_field(body: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        TrainConfig.model_validate(body)
    assert field in str(exc.value)


def test_worker_queues_setting_and_host_defaults() -> None:
    assert parse_queues(" gpu, cpu,gpu ") == ["gpu", "cpu"]
    for bad in ("", "gpus", "gpu-x1", "gpu-x17", "GPU", "gpu-x4-"):
        with pytest.raises(ValueError, match="queue"):
            parse_queues(bad)
    with pytest.raises(ValidationError, match="worker_queues"):
        Settings(worker_queues="gpu,tpu")
    assert Settings(worker_queues="cpu, gpu").worker_queues == "cpu,gpu"
    assert host_queues(0) == ["cpu", "gpu"]  # single-device jobs run on a GPU-less host's CPU
    assert host_queues(2, "h100") == ["cpu", "gpu", "gpu-h100", "gpu-x2", "gpu-x2-h100"]
    assert gpu_kind("NVIDIA H100 80GB HBM3") == "h100" and gpu_kind("NVIDIA A100-SXM4-40GB") == "a100"
    assert gpu_kind("Tesla T4") == "t4" and gpu_kind("NVIDIA GeForce RTX 4090") is None
    assert describe_queue("gpu-x4") == "a worker with 4 GPUs"
    assert describe_queue("gpu-h100") == "a worker with a GPU (h100)"


def test_an_unserved_queue_leaves_the_job_queued_with_a_message(tmp_path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'ctrw.db'}", broker_url=None)
    upgrade(settings)
    four = TrainConfig.model_validate({"distributed": {"nproc_per_node": 4}}).model_dump(mode="json")
    with session_factory(settings.database_url)() as session:
        big = Job(kind=JobKind.TRAIN, status=JobStatus.QUEUED, config=four, config_hash="0" * 64)
        small = Job(kind=JobKind.TRAIN, status=JobStatus.QUEUED, config={}, config_hash="1" * 64)
        session.add_all([big, small])
        session.commit()
        jobs = routed(session=session, job_ids=[big.id, small.id])
        assert [j.queue for j in jobs] == ["gpu-x4", "gpu"] and jobs == [big.id, small.id]
        sent: list[list[str]] = []

        def dispatch_group(job_ids: list[str]) -> set[str]:  # a broker whose workers serve gpu only
            sent.append(list(job_ids))
            return {q.queue for q in job_ids} - {"gpu"}  # type: ignore[attr-defined]

        dispatch_ready(session=session, dispatch_group=dispatch_group, queued=[big.id, small.id])
        assert sent == [[big.id, small.id]]
        progress = dict(session.execute(select(Job.id, Job.progress)).all())
        assert progress[big.id] == {
            "phase": "queued",
            "detail": "waiting for a worker with 4 GPUs (queue gpu-x4): none has subscribed",
        }
        assert progress[small.id] is None
        # The embedded worker takes only what its host serves.
        assert execution.next_queued_job_id(session=session, queues=["cpu", "gpu"]) == small.id
        assert execution.next_queued_job_id(session=session, queues=["gpu-x4"]) == big.id
        assert Routed(big.id, "gpu-x4") == big.id
