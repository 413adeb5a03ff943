"""The checks of the connection and the scheduler: SSH reachability, host key, login,
latency; the scheduler's answer and the descriptor built from it.

Each check fills its evidence as it goes, returns the message of a pass, and
raises CheckFailed (or lets an adapter error through) for a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time

from adapters.errors import AuthenticationFailed, HostKeyRejected
from adapters.transport.framing import LoginEnvironmentBroken
from adapters.transport.hostkeys import fingerprint, parse_pinned_key
from gateway.centers.config import SSHConfig
from gateway.centers.descriptor import schema_errors
from gateway.centers.evaluation.context import CALL_TIMEOUT, CheckFailed, Context, Evidence, bounded
from gateway.centers.evaluation.verdict import num, threshold_failures
from gateway.centers.power import LOAD_TIMEOUT

LATENCY_ROUND_TRIPS = 20


def _ssh(ctx: Context) -> SSHConfig:
    ssh = ctx.center.config.ssh
    if ssh is None:
        raise CheckFailed(f"center {ctx.center_id} has no 'ssh' section")
    return ssh


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def ssh_connect(ctx: Context, ev: Evidence) -> str:
    ssh = _ssh(ctx)
    where = f"{ssh.host}:{ssh.port}"
    ev.update(host=ssh.host, port=ssh.port)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(ssh.connect_timeout):
            reader, writer = await asyncio.open_connection(ssh.host, ssh.port)
    except TimeoutError:
        raise CheckFailed(f"no TCP connection to {where} within {ssh.connect_timeout:g}s") from None
    except OSError as exc:
        raise CheckFailed(f"cannot connect to {where}: {exc.strerror or exc}") from None
    ev["connect_ms"] = _ms(time.perf_counter() - started)
    try:
        async with asyncio.timeout(ssh.connect_timeout):
            banner = (await reader.readline()).decode(errors="replace").strip()
    except (TimeoutError, OSError):
        banner = ""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    ev["banner"] = banner
    if not banner.startswith("SSH-"):
        raise CheckFailed(f"{where} accepts connections but sent no SSH banner")
    return f"{where} accepted a connection in {num(ev['connect_ms'])} ms ({banner})"


async def ssh_host_key(ctx: Context, ev: Evidence) -> str:
    ssh = _ssh(ctx)
    pinned = [fingerprint(parse_pinned_key(key)[1]) for key in ssh.host_keys]
    ev["pinned"] = pinned
    connection = ctx.connection()
    try:
        await bounded(connection.run("true", timeout=CALL_TIMEOUT), "the SSH handshake")
    except HostKeyRejected as exc:
        ev["presented"] = exc.fingerprint or None
        raise CheckFailed(exc.message) from None
    except AuthenticationFailed:
        # The host key is checked before authentication: it matched one pinned.
        ev["presented"] = pinned[0] if len(pinned) == 1 else "one of the pinned keys"
        return "the host key presented is pinned (the login is judged next)"
    transport = connection.transport
    key = transport.get_remote_server_key() if transport is not None else None
    if key is None:
        raise CheckFailed("the connection closed before its host key could be read")
    presented = fingerprint(key.asbytes())
    ev.update(presented=presented, key_type=key.get_name())
    if presented not in pinned:
        raise CheckFailed(f"host key {presented} is not pinned in the center config")
    return f"host key {presented} ({key.get_name()}) is pinned"


def unusable_login(login: str | None, message: str) -> str:
    """The failure of ssh.login when the login shell or its startup files keep the
    gateway's commands from running: that is the cause, not the key or the host."""
    return f"the login environment of {login!r} is unusable, so no command runs there: {message}"


def banner_before(said: str, login: str | None) -> str | None:
    """What a login printed before the answer of `id -un` (an unframed transport takes
    a banner for part of it: 'Welcome ...\nalice'), or None when the answer is not so."""
    lines = said.splitlines()
    if login and len(lines) > 1 and lines[-1].strip() == login:
        return " ".join(" ".join(lines[:-1]).split())[:80]
    return None


async def ssh_login(ctx: Context, ev: Evidence) -> str:
    connection = ctx.connection()
    ev.update(login=ctx.login, credential=connection.target.credential.label, command="id -un")
    try:
        result = await bounded(connection.run("id -un", timeout=CALL_TIMEOUT), "the login")
    except LoginEnvironmentBroken as exc:
        ev["cause"] = "login environment"
        raise CheckFailed(unusable_login(ctx.login, exc.message)) from None
    said = result.stdout.decode(errors="replace").strip()
    ev.update(exit_status=result.exit_status, stdout=said)
    # What the startup files print around every answer, which the transport set aside.
    noise = connection.login_noise
    if noise:
        ev["login_environment_prints"] = noise
    if result.exit_status != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        ev["stderr"] = stderr
        raise CheckFailed(f"'id -un' exited {result.exit_status}: {stderr[:200]}")
    if said != ctx.login:
        if (banner := banner_before(said, ctx.login)) is not None:
            ev["cause"] = "login environment"
            raise CheckFailed(
                unusable_login(
                    ctx.login,
                    f"its startup files print {banner!r} into every command's answer "
                    f"('id -un' answered {said[:120]!r})",
                )
            )
        raise CheckFailed(f"logged in as {said!r}, not as the service login {ctx.login!r}")
    done = f"logged in as {ctx.login} with the key from {connection.target.credential.label}"
    if noise:
        done += f"; its startup files print {noise!r} around every command (set aside)"
    return done


async def ssh_latency(ctx: Context, ev: Evidence) -> str:
    connection = ctx.connection()
    samples: list[float] = []
    ev.update(command="true", round_trips=LATENCY_ROUND_TRIPS)
    for _ in range(LATENCY_ROUND_TRIPS):
        started = time.perf_counter()
        result = await bounded(connection.run("true", timeout=CALL_TIMEOUT), "'true'")
        samples.append(_ms(time.perf_counter() - started))
        if result.exit_status != 0:
            raise CheckFailed(f"'true' exited {result.exit_status}")
    ordered = sorted(samples)
    p50 = round(statistics.median(ordered), 2)
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]  # nearest rank
    ctx.figures.ssh_latency_ms_p50, ctx.figures.ssh_latency_ms_p95 = p50, p95
    ev.update(samples_ms=samples, p50_ms=p50, p95_ms=p95)
    unmet = threshold_failures(ctx.figures, ctx.admission).get("ssh.latency")
    if unmet:
        raise CheckFailed("; ".join(unmet))
    return f"p50 {num(p50)} ms, p95 {num(p95)} ms over {LATENCY_ROUND_TRIPS} round trips"


async def scheduler_responding(ctx: Context, ev: Evidence) -> str:
    load = await bounded(
        ctx.power.load(ctx.center_id, max_age=0), "the scheduler's load query", LOAD_TIMEOUT + 5
    )
    ev["partitions"] = [
        {"name": p.name, "available": p.available, "nodes": p.nodes_total, "cores": p.cores_total}
        for p in load.partitions
    ]
    ev.update(jobs_queued=load.jobs_queued, jobs_running=load.jobs_running)
    if not load.partitions:
        raise CheckFailed("the scheduler answered but reports no partition")
    names = ", ".join(p.name for p in load.partitions)
    return f"the scheduler answered: {len(load.partitions)} partition(s) ({names})"


async def descriptor_valid(ctx: Context, ev: Evidence) -> str:
    doc = await bounded(
        ctx.power.descriptor(ctx.center_id, max_age=0), "the descriptor", LOAD_TIMEOUT + 5
    )
    errors = schema_errors(doc)
    ev.update(descriptor_version=doc.get("descriptor_version"), errors=errors[:20])
    if errors:
        raise CheckFailed(f"{len(errors)} schema error(s), the first: {errors[0]}")
    ctx.descriptor = doc
    return f"descriptor {doc.get('descriptor_version')} validates against the schema"


async def descriptor_complete(ctx: Context, ev: Evidence) -> str:
    doc = ctx.descriptor
    if doc is None:
        raise CheckFailed("no descriptor to judge")
    config = ctx.center.config
    missing: list[str] = []
    if not doc["peak"]["complete"]:
        bare = [p["name"] for p in doc["partitions"] if p.get("peak_gflops") is None]
        missing.append(f"hardware figures of partition(s) {', '.join(bare) or '(none listed)'}")
    missing += [
        f"'{name}' (not configured)"
        for name in ("price", "energy")
        if name not in config.model_fields_set
    ]
    available = [p["name"] for p in doc["partitions"] if p["available"]]
    if not available:
        missing.append("an available partition")
    ev.update(missing=missing, available_partitions=available, peak_gflops=doc["peak"]["gflops"])
    if missing:
        raise CheckFailed("missing: " + "; ".join(missing))
    return f"hardware, price and energy configured; {len(available)} partition(s) available"
