"""A job of an application: the definition's resource hints and limits applied to its
spec, and the run recorded on its record (version, parameters, rendered script)."""

from __future__ import annotations

from gateway.apps.models import AppDefinition
from gateway.apps.service import AppPlan, Offer
from gateway.errors import Unprocessable
from gateway.jobs.models import JobSpec, Resources
from gateway.jobs.records import AppRun


def with_app_resources(spec: JobSpec, app: AppDefinition) -> JobSpec:
    """`spec` with the definition's resource hints where it gives no resources, checked
    against the definition's limits (an Unprocessable naming `resources.<field>`)."""
    res = spec.resources
    if "resources" not in spec.model_fields_set:
        hints = app.resources.model_dump(exclude_none=True)
        res = Resources.model_validate({**res.model_dump(exclude_none=True), **hints})
        spec = spec.model_copy(update={"resources": res})
    limits = app.limits
    over = [
        ("nodes", res.nodes, limits.max_nodes),
        ("tasks_per_node", res.tasks_per_node, limits.max_tasks_per_node),
        ("cpus_per_task", res.cpus_per_task, limits.max_cpus_per_task),
        ("walltime", res.walltime, limits.max_walltime),
    ]
    for name, value, most in over:
        if most is not None and value is not None and value > most:
            raise Unprocessable(
                "invalid_request",
                f"resources.{name}: {app.name} allows at most {most:g}, got {value:g}",
                f"resources.{name}",
            )
    return spec


def app_run(plan: AppPlan, offer: Offer, spec: JobSpec) -> tuple[JobSpec, AppRun]:
    """The spec as it goes to the center (in a partition the binding is offered in) and
    what the record shows of the run."""
    partitions = offer.binding.partitions
    if partitions and spec.queue is None:
        spec = spec.model_copy(update={"queue": partitions[0]})
    elif partitions and spec.queue not in partitions:
        raise Unprocessable(
            "unsatisfiable",
            f"queue: {plan.definition.name} {offer.binding.version} is offered at "
            f"{offer.center.id} only in {', '.join(partitions)}",
            "queue",
        )
    run = plan.render(offer)
    return spec, AppRun(
        name=plan.definition.name,
        version=offer.binding.version,
        parameters=dict(plan.values),
        modules=list(offer.binding.modules),
        executable=run.executable,
        outputs=run.outputs,
        script=run.script,
    )
