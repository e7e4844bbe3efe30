"""Operator actions."""

from __future__ import annotations

import functools
from datetime import timedelta

from fastapi import APIRouter

from app.api.deps import ADMIN_ERRORS, AdminDep, DispatchGroupDep, SessionDep, SettingsDep
from app.core.queue import InFlight, make_in_flight
from app.core.settings import Settings
from app.schemas import RequeuePublic
from app.services.reconcile import reconcile

# Admin keys only (app.api.deps.AdminDep); without keys on loopback the local user is the admin.
router = APIRouter(prefix="/admin", tags=["admin"], responses=ADMIN_ERRORS)


@functools.cache
def _in_flight(settings: Settings) -> InFlight | None:
    return make_in_flight(settings)


@router.post("/requeue-stale", response_model=RequeuePublic)
def requeue_stale(
    session: SessionDep, settings: SettingsDep, dispatch_group: DispatchGroupDep, _admin: AdminDep
) -> RequeuePublic:
    """Reconcile the queue with the database now (every worker also does it every quarter of
    `CTRW_STALE_AFTER_S`): requeue running jobs whose worker stopped heartbeating (fail those
    that lost it `CTRW_MAX_ATTEMPTS` times), queue waiting jobs whose dependencies finished, and
    resend queued jobs whose message the broker does not hold."""
    done = reconcile(
        session=session,
        stale_after=timedelta(seconds=settings.stale_after_s),
        max_attempts=settings.max_attempts,
        dispatch_group=dispatch_group,
        in_flight=_in_flight(settings),
    )
    return RequeuePublic(
        requeued=done.requeued, failed=done.failed, promoted=done.promoted, redispatched=done.redispatched
    )
