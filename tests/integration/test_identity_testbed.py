"""One account, many centers: federation users run as their own mapped logins, and
no user sees or touches another's jobs."""

from __future__ import annotations

from gateway.client.core import ClientError, HpcfedClient
from gateway.config import LoadedConfig
from gateway.http.routes.keys import CENTERS
from tests.conftest import GatewayFactory, config_with

# Federation names that differ from the Unix logins, so only the map can join them.
ADA, GRACE = "ada.lovelace", "grace"
WHOAMI = {"command": "sh", "arguments": ["-c", "id -un"], "center": "centera"}


def mapped(testbed_config: LoadedConfig) -> LoadedConfig:
    base = testbed_config.centers["centera"]
    users = {ADA: {"login": "alice"}, GRACE: {"login": "bob"}}
    centera = type(base).model_validate({**base.model_dump(), "users": users})
    return config_with(
        testbed_config, testbed_config.data_dir, centers={"centera": centera}, default_center=None
    )


async def status_of(client: HpcfedClient, method: str, path: str) -> int:
    try:
        await client.request(method, path)
    except ClientError as exc:
        return exc.status
    return 200


async def test_each_user_runs_as_their_mapped_login_and_sees_only_their_jobs(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(
        mapped(testbed_config),
        {ADA: ("researcher",), GRACE: ("researcher",), "olga": ("operator",)},
    )
    async with gw.client(ADA) as ada, gw.client(GRACE) as grace, gw.client("olga") as olga:
        ada_job = await ada.submit(WHOAMI)
        grace_job = await grace.submit(WHOAMI)
        assert (ada_job["login"], grace_job["login"]) == ("alice", "bob")
        for client, job, login in ((ada, ada_job, "alice"), (grace, grace_job, "bob")):
            done = await client.wait(job["id"], timeout=90, interval=0.3)
            assert done["state"] == "COMPLETED", done
            assert await client.output(job["id"]) == f"{login}\n".encode()

        # Neither sees the other's job: "not found", as for a job that never existed.
        for path in (f"/v1/jobs/{grace_job['id']}", f"/v1/jobs/{grace_job['id']}/output/stdout"):
            assert await status_of(ada, "GET", path) == 404
        assert await status_of(ada, "DELETE", f"/v1/jobs/{grace_job['id']}") == 404
        assert [j["id"] for j in (await ada.list())["jobs"]] == [ada_job["id"]]
        assert [j["id"] for j in (await grace.list())["jobs"]] == [grace_job["id"]]
        assert (await grace.get(grace_job["id"]))["state"] == "COMPLETED"  # not cancelled

        # An operator sees every job's metadata, and nothing more.
        listed = {j["id"] for j in (await olga.list())["jobs"]}
        assert listed == {ada_job["id"], grace_job["id"]}
        assert await status_of(olga, "GET", f"/v1/jobs/{ada_job['id']}/output/stdout") == 403
        assert await status_of(olga, "DELETE", f"/v1/jobs/{ada_job['id']}") == 403
        assert await status_of(olga, "POST", "/v1/jobs") == 403

    # One pooled connection per (center, login): the two logins never share one.
    centera = gw.app[CENTERS].get("centera")
    logins = {a.target.login for a in centera.adapters()}  # type: ignore[attr-defined]
    assert logins == {"alice", "bob"}


async def test_user_without_a_login_at_a_center_gets_403_naming_it(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(mapped(testbed_config), ("mallory",))
    async with gw.client("mallory") as mallory:
        try:
            await mallory.submit(WHOAMI)
        except ClientError as exc:
            assert exc.status == 403
            assert exc.body["code"] == "no_identity_at_center"
            assert exc.body["center"] == "centera"
            assert "centera" in exc.body["message"]
        else:
            raise AssertionError("an unmapped user's job was accepted")
        assert (await mallory.list())["jobs"] == []  # nothing was stored
