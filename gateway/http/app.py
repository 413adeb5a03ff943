"""The application factory: wires config, secrets, auth, store, centers, service,
poller and routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.apps.service import AppService
from gateway.apps.verification import CanaryRunner
from gateway.centers.configured import build_registry
from gateway.centers.evaluation.service import EvaluationService
from gateway.centers.health import HealthMonitor
from gateway.centers.ownership import CenterOwnership
from gateway.centers.placement import Placer
from gateway.centers.power import PowerService
from gateway.config import LoadedConfig
from gateway.data.transfers import TransferService
from gateway.http import tes
from gateway.http.access_log import AccessLog
from gateway.http.audit import audit_middleware
from gateway.http.auth import auth_middleware, principal_of, rate_limit_key
from gateway.http.errors import error_middleware
from gateway.http.limits import (
    MemoryBudget,
    RateLimiter,
    body_limit_middleware,
    memory_budget_middleware,
    rate_limit_middleware,
)
from gateway.http.metrics import METRICS, GatewayMetrics, metrics_middleware
from gateway.http.request_id import request_id_middleware, setup_request_id
from gateway.http.routes import (
    apps,
    centers,
    dashboard,
    evaluations,
    events,
    files,
    health,
    jobs,
    metrics,
    openapi,
    tokens,
    transfers,
    usage,
)
from gateway.http.routes.files import CONTENT_ROUTE
from gateway.http.routes.keys import (
    APPS,
    AUDIT,
    CANARIES,
    CENTERS,
    CONFIG,
    EVALUATIONS,
    EVENTS,
    HEALTH,
    ISSUER,
    KEYRING,
    POLLER,
    POWER,
    SERVICE,
    STORE,
    TES,
    TRANSFERS,
    VAULT,
    VERIFIER,
)
from gateway.identity.keyring import Keyring
from gateway.identity.permissions import CLIENT_TOKEN_FILE, ensure_client_token
from gateway.identity.tokens import TokenIssuer
from gateway.identity.vault import Vault
from gateway.identity.verifier import TokenVerifier
from gateway.jobs.events import EventBus
from gateway.jobs.feeds import LocalJobFeed
from gateway.jobs.poller import Poller
from gateway.jobs.service import JobService
from gateway.store import Stores, open_stores
from gateway.tes.service import TesService

#: Routes whose handlers stream their bodies, so no body cap applies to them.
STREAMED_UPLOADS = (CONTENT_ROUTE, "/v1/jobs/{id}/inputs/{index}")
#: List routes whose pages are bounded by limits.max_page (held in the memory budget).
PAGED_LISTS = ("/v1/jobs",)
UPLOAD_READ_BUFFER = 1 << 20
#: The longest request line and header field the HTTP parser takes (aiohttp's is 8190).
MAX_REQUEST_LINE = 64 << 10
#: Bootstrap client tokens live this long at most; they are renewed at start.
CLIENT_TOKEN_TTL = 30 * 86400.0
#: Every store of the gateway, of the configured backend.
STORES = web.AppKey("stores", Stores)


def setup_routes(app: web.Application) -> None:
    health.setup_routes(app)
    jobs.setup_routes(app)
    apps.setup_routes(app)
    events.setup_routes(app)
    centers.setup_routes(app)
    files.setup_routes(app)
    tokens.setup_routes(app)
    transfers.setup_routes(app)
    usage.setup_routes(app)
    evaluations.setup_routes(app)
    metrics.setup_routes(app)
    dashboard.setup_routes(app)
    openapi.setup_routes(app)
    tes.setup_routes(app)  # last: its routes' permissions join the app's table


def create_app(config: LoadedConfig) -> web.Application:
    """The gateway app. Opens the vault (its master key); a signing key is made at
    start if there is none, once the store's schema is up to date."""
    gw = config.gateway
    stores = open_stores(config)
    vault = Vault.open(gw.vault, config.data_path, create=True, entries=stores.vault)
    keyring = Keyring(vault)
    verifier = TokenVerifier(keyring, gw.auth, config.data_path)
    audit = stores.audit
    max_body = gw.limits.max_body << 20
    limiter = RateLimiter(gw.limits.rate, gw.limits.burst)
    metrics = GatewayMetrics()
    app = web.Application(
        middlewares=[
            request_id_middleware,  # first: everything below logs with the request's id
            audit_middleware(audit, principal_of),  # outermost: sees the final answer
            metrics_middleware(metrics),
            error_middleware,
            body_limit_middleware(max_body, exempt=STREAMED_UPLOADS),
            auth_middleware(verifier),
            rate_limit_middleware(limiter, rate_limit_key),
            # last: only authenticated requests within their rate hold memory
            memory_budget_middleware(
                MemoryBudget(gw.limits.max_in_flight << 20),
                STREAMED_UPLOADS,
                gw.limits.max_page << 20,
                PAGED_LISTS,
            ),
        ],
        client_max_size=max_body,
        # Streamed uploads are read in up to 1 MiB pieces rather than 64 KiB ones.
        handler_args={
            "read_bufsize": UPLOAD_READ_BUFFER,
            # Long paths and headers reach the app, which refuses them in the error
            # shape naming the field; only beyond these does aiohttp's parser answer.
            "max_line_size": MAX_REQUEST_LINE,
            "max_field_size": MAX_REQUEST_LINE,
            # aiohttp's access log line, made without its general-purpose formatter.
            "access_log_class": AccessLog,
        },
    )
    app[CONFIG], app[VAULT], app[KEYRING], app[VERIFIER], app[AUDIT] = (
        config,
        vault,
        keyring,
        verifier,
        audit,
    )
    app[STORES] = stores
    app[ISSUER] = TokenIssuer(keyring, gw.auth)
    app[METRICS] = metrics
    setup_request_id(app)
    app[EVENTS] = EventBus()
    app.cleanup_ctx.append(_resources)
    setup_routes(app)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    stores = app[STORES]
    await stores.open()  # migrations first: the vault's entries may live in the store
    await asyncio.to_thread(app[KEYRING].ensure)
    auth = config.gateway.auth
    if auth.bootstrap_user:
        await ensure_client_token(
            app[ISSUER],
            app[VERIFIER],
            config.data_dir / CLIENT_TOKEN_FILE,
            auth.bootstrap_user,
            auth.bootstrap_roles,
            min(CLIENT_TOKEN_TTL, auth.max_ttl),
        )
    # Job events come from the backend's feed (in-process without one): the store it
    # gives back is what every job write goes through.
    feed = app[events.FEED] = stores.feed or LocalJobFeed()
    store = await feed.start(stores.jobs, app[EVENTS])
    centers = build_registry(config, app[VAULT])
    power = PowerService(
        centers,
        stores.probes,
        stores.evaluations,
        config.gateway.computing_power,
        config.gateway.admission,
    )
    app[POWER] = power
    lease_ttl = config.gateway.lease_ttl
    catalog = app[APPS] = AppService(config.apps, stores.apps, centers)
    power.applications = catalog.applications_of
    canaries = app[CANARIES] = CanaryRunner(catalog, stores.apps, centers, stores.leases)
    service = JobService(
        store,
        centers,
        submit_timeout=config.gateway.submit_timeout,
        placer=Placer(centers, power, config.gateway.placement),
        leases=stores.leases,
        lease_ttl=lease_ttl,
        apps=catalog,
    )
    app[TES] = TesService(service, centers, catalog)
    # The centers this replica polls and probes (all of them with the embedded store).
    ownership = CenterOwnership(stores.leases, [c.id for c in centers], lease_ttl)
    poller = Poller(
        service,
        interval=config.gateway.poll_interval,
        timeout=max(config.gateway.submit_timeout, 30.0),
        unaccounted_after=config.gateway.unaccounted_after,
        submit_attempts=config.gateway.submit_attempts,
        ownership=ownership,
    )
    transfers = TransferService(stores.transfers, centers, stores.leases)
    app[STORE], app[CENTERS], app[SERVICE], app[POLLER] = store, centers, service, poller
    app[TRANSFERS] = transfers
    app[METRICS].watch(centers, poller, transfers)
    await transfers.start()
    evaluations = EvaluationService(
        stores.evaluations, centers, power, config.gateway.admission, stores.leases
    )
    await evaluations.start_service()
    app[EVALUATIONS] = evaluations
    await ownership.start()
    poll_task = asyncio.create_task(poller.run(), name="poller")
    health = HealthMonitor(centers, stores.probes, config.gateway.health, store, poller, ownership)
    app[HEALTH] = health
    await health.start()
    try:
        yield
    finally:
        await health.close()
        poll_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll_task
        await ownership.close()  # its centers go to another replica at once
        await service.close()
        await evaluations.close()  # before the centers: its runs cancel their jobs
        await canaries.close()
        await transfers.close()
        await feed.close()
        await stores.close()
        await centers.close()  # every SSH connection
        await app[VERIFIER].close()
