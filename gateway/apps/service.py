"""The application catalog: definitions (from files, and put by admins through the
API), which center offers which version (its bindings), how each binding's canary
went, and the plan for a job of an application: which centers may run it, and the
script it runs at each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from gateway.apps.models import AppDefinition, AppRequest, Scalar
from gateway.apps.render import RenderedRun, check_parameters, check_version, render
from gateway.apps.store import AppStore, StoredDefinition, Verification
from gateway.centers.config import AppBinding
from gateway.centers.configured import Center, CenterRegistry
from gateway.errors import DomainError, Unprocessable, validation_error


@dataclass(frozen=True)
class Offer:
    """One center's binding of one version, and its latest canary."""

    center: Center
    binding: AppBinding
    verification: Verification | None

    @property
    def state(self) -> str:
        return self.verification.state if self.verification else "unverified"

    def public(self, evidence: bool = False) -> dict[str, Any]:
        """The offer as the API shows it; with `evidence`, what its canary found."""
        v = self.verification
        doc = {
            "center": self.center.id,
            "state": self.state,
            "checked_at": v.checked_at.isoformat() if v else None,
            "message": v.message if v else None,
            "evaluation_id": v.evaluation_id if v else None,
            "modules": list(self.binding.modules),
            "partitions": list(self.binding.partitions),
        }
        if evidence:
            doc["evidence"] = v.evidence if v else None
        return doc


def _why_not(offer: Offer) -> str | None:
    """Why `center: auto` may not choose this offer; None when it may."""
    v = offer.verification
    what = f"{offer.binding.app} {offer.binding.version}"
    if v is None:
        return f"app: {what} is offered here but not verified yet (its canary has not run)"
    if v.state != "verified":
        return f"app: {what} failed its canary at {v.checked_at.isoformat()}: {v.message}"
    return None


@dataclass
class AppPlan:
    """A job's application: its definition, the version asked for (None: the newest a
    center offers), the parameters' values, and every center's offers of it."""

    definition: AppDefinition
    version: str | None
    values: dict[str, Scalar]
    offers: dict[str, list[Offer]] = field(default_factory=dict)  # center -> newest first

    @property
    def what(self) -> str:
        return f"{self.definition.name} {self.version}" if self.version else self.definition.name

    def _offer(self, center_id: str, verified: bool) -> Offer | None:
        for offer in self.offers.get(center_id, []):
            if not verified or _why_not(offer) is None:
                return offer
        return None

    def refusal(self, center: Center) -> list[str] | None:
        """Why `center: auto` may not place the job at `center`; None when it may."""
        offers = self.offers.get(center.id, [])
        if not offers:
            return [f"app: {self.what} is not offered here"]
        if self._offer(center.id, verified=True) is not None:
            return None
        return [why for offer in offers if (why := _why_not(offer))]

    def chosen(self, center: Center, placed: bool) -> Offer:
        """The offer a job goes with at `center`: verified where `center: auto` chose
        it; where the spec names the center, any binding but a failed one."""
        offer = self._offer(center.id, verified=True)
        if offer is None and not placed:
            offer = next((o for o in self.offers.get(center.id, []) if o.state != "failed"), None)
            if offer is None and self.offers.get(center.id):
                failed = self.offers[center.id][0]
                raise Unprocessable("unsatisfiable", f"center: {_why_not(failed)}", "center")
        if offer is None:
            raise Unprocessable(
                "unsatisfiable", f"center: {center.id} does not offer {self.what}", "center"
            )
        return offer

    def render(self, offer: Offer) -> RenderedRun:
        binding = offer.binding
        return render(self.definition, binding.version, offer.center.config, binding, self.values)

    def explanation(self, offer: Offer) -> str:
        v = offer.verification
        when = (
            f", canary verified {v.checked_at.isoformat()}" if v and v.state == "verified" else ""
        )
        return f"{self.definition.name} {offer.binding.version} offered here{when}"


class AppService:
    def __init__(
        self, files: Mapping[str, AppDefinition], store: AppStore, centers: CenterRegistry
    ) -> None:
        self.files = dict(files)
        self.store = store
        self.centers = centers

    # ------------------------------------------------------------ definitions

    async def definitions(self) -> dict[str, tuple[AppDefinition, str]]:
        """name -> (definition, where it comes from: "file" or "api")."""
        found = {name: (app, "file") for name, app in self.files.items()}
        for stored in await self.store.list_definitions():
            app = _parsed(stored)
            if app is not None and stored.name not in found:
                found[stored.name] = (app, "api")
        return dict(sorted(found.items()))

    async def definition(self, name: str, field_name: str | None = None) -> AppDefinition:
        app = self.files.get(name)
        if app is None:
            stored = await self.store.get_definition(name)
            app = _parsed(stored) if stored else None
        if app is None:
            known = ", ".join(await self.definitions()) or "none"
            message = f"no application {name!r} in the catalog (it has: {known})"
            if field_name:
                raise Unprocessable("unknown_app", f"{field_name}: {message}", field_name)
            raise DomainError("unknown_app", message)
        return app

    async def put(self, name: str, document: Any, user: str) -> AppDefinition:
        if name in self.files:
            raise DomainError(
                "app_defined_in_file",
                f"{name} is defined in the gateway's app files; change it there",
            )
        if not isinstance(document, dict):
            raise DomainError("invalid_request", "(body): must be a JSON object", "(body)")
        try:
            app = AppDefinition.model_validate(document)
        except ValidationError as exc:
            raise validation_error(exc) from None
        if app.name != name:
            raise Unprocessable(
                "invalid_request", f"name: {app.name!r} is not the URL's {name!r}", "name"
            )
        await self.store.put_definition(name, app.model_dump(mode="json"), user)
        return app

    async def delete(self, name: str) -> None:
        if name in self.files:
            raise DomainError(
                "app_defined_in_file",
                f"{name} is defined in the gateway's app files; remove it there",
            )
        if not await self.store.delete_definition(name):
            raise DomainError("unknown_app", f"no application {name!r} was put through the API")

    # ------------------------------------------------------------ offers

    async def offers(self, app: str, centers: list[Center] | None = None) -> dict[str, list[Offer]]:
        """center -> its bindings of `app`, newest version first (the definition's order)."""
        definition = await self.definition(app)
        rank = {version: i for i, version in enumerate(definition.versions)}
        checked = {v.key: v for v in await self.store.verifications(app=app)}
        found: dict[str, list[Offer]] = {}
        for center in centers if centers is not None else list(self.centers):
            bindings = [
                b for b in center.config.applications.bindings if b.app == app and b.version in rank
            ]
            bindings.sort(key=lambda b: rank[b.version])
            if bindings:
                found[center.id] = [
                    Offer(center, b, checked.get((center.id, app, b.version))) for b in bindings
                ]
        return found

    async def plan(self, request: AppRequest) -> AppPlan:
        """What a job of `request` may run, and where; an Unprocessable naming `app.*`
        when the catalog has no such application or version, a parameter is wrong, or
        no center offers it."""
        definition = await self.definition(request.name, "app.name")
        version = check_version(definition, request.version)
        values = check_parameters(definition, request.parameters)
        offers = await self.offers(definition.name)
        if version is not None:
            offers = {
                cid: kept
                for cid, found in offers.items()
                if (kept := [o for o in found if o.binding.version == version])
            }
        plan = AppPlan(definition, version, values, offers)
        if not offers:
            field_name = "app.version" if version else "app.name"
            raise Unprocessable(
                "unsatisfiable", f"{field_name}: no center offers {plan.what}", field_name
            )
        return plan

    # ------------------------------------------------------------ views

    async def listing(self, center: str | None = None) -> list[dict[str, Any]]:
        found = (await self.definitions()).values()
        return [await self._view(app, source, center, full=False) for app, source in found]

    async def show(self, name: str) -> dict[str, Any]:
        app = await self.definition(name)
        source = "file" if name in self.files else "api"
        return await self._view(app, source, None, full=True)

    async def _view(
        self, app: AppDefinition, source: str, center: str | None, full: bool
    ) -> dict[str, Any]:
        offers = await self.offers(app.name)
        versions = []
        for version in app.versions:
            at = [
                o.public(evidence=full)
                for cid, found in offers.items()
                for o in found
                if o.binding.version == version and (center is None or cid == center)
            ]
            versions.append({"version": version, "centers": at})
        doc: dict[str, Any] = {
            "name": app.name,
            "title": app.title,
            "description": app.description,
            "source": source,
            "versions": versions,
        }
        if full:
            doc.update(
                parameters={k: v.model_dump(mode="json") for k, v in app.parameters.items()},
                outputs=list(app.outputs),
                resources=app.resources.model_dump(mode="json", exclude_none=True),
                limits=app.limits.model_dump(mode="json", exclude_none=True),
                canary=app.canary.model_dump(mode="json"),
                run=app.run.model_dump(mode="json"),
            )
        return doc

    async def applications_of(self, center: Center) -> list[dict[str, Any]]:
        """The descriptor's `applications` of a center: each binding and its canary."""
        checked = {(v.app, v.version): v for v in await self.store.verifications(center=center.id)}
        out = []
        for b in center.config.applications.bindings:
            v = checked.get(b.key)
            out.append(
                {
                    "name": b.app,
                    "version": b.version,
                    "state": v.state if v else "unverified",
                    "verified_at": v.checked_at if v and v.state == "verified" else None,
                    "checked_at": v.checked_at if v else None,
                    "partitions": list(b.partitions),
                }
            )
        return out


def _parsed(stored: StoredDefinition) -> AppDefinition | None:
    try:
        return AppDefinition.model_validate(stored.document)
    except ValidationError:
        return None  # put by an older version that checked less: not offered
