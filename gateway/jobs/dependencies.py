"""Dependencies between gateway jobs, translated to native ids at one center.

A job may depend only on its owner's jobs at its own center (`center: auto`
follows its parents). A parent that already ended either satisfies the
condition (the dependency is dropped) or never can (the job is refused); a
parent not yet at its center makes the child wait in the gateway.
"""

from __future__ import annotations

from adapters.base import DEPENDENCY_SATISFIED_BY as SATISFIED_BY
from gateway.errors import DomainError, Unprocessable
from gateway.jobs.models import JobSpec
from gateway.jobs.records import JobRecord
from gateway.jobs.store import JobStore


class DependencyNeverMet(DomainError):
    """A parent ended in a state its condition excludes: the job can never run."""

    def __init__(self, index: int, parent: JobRecord, condition: str) -> None:
        field = f"dependencies[{index}].job"
        super().__init__(
            "dependency_never_met",
            f"{field}: job {parent.id} ended {parent.state.value}, so '{condition}' "
            "can never be met",
            field,
        )


async def load_parents(store: JobStore, owner: str, spec: JobSpec) -> list[JobRecord]:
    parents = []
    for index, dep in enumerate(spec.dependencies):
        parent = await store.get(dep.job)
        if parent is None or parent.owner != owner:
            field = f"dependencies[{index}].job"
            raise Unprocessable("invalid_request", f"{field}: no job {dep.job} of yours", field)
        parents.append(parent)
    return parents


def check_center(parents: list[JobRecord], center: str) -> None:
    for index, parent in enumerate(parents):
        if parent.center != center:
            field = f"dependencies[{index}].job"
            raise Unprocessable(
                "invalid_request",
                f"{field}: job {parent.id} runs at {parent.center}; a job can depend only on "
                f"jobs at its own center ({center})",
                field,
            )


def native_dependencies(spec: JobSpec, parents: list[JobRecord]) -> list[tuple[str, str]] | None:
    """(condition, native id) pairs for the center; None while a parent has no native id yet.

    Raises DependencyNeverMet when a parent ended in a state the condition excludes.
    """
    pairs: list[tuple[str, str]] = []
    waiting = False
    for index, (dep, parent) in enumerate(zip(spec.dependencies, parents, strict=True)):
        if parent.state in SATISFIED_BY[dep.condition]:
            continue
        if parent.state.is_terminal:
            raise DependencyNeverMet(index, parent, dep.condition)
        if parent.native_id is None:
            waiting = True
        else:
            pairs.append((dep.condition, parent.native_id))
    return None if waiting else pairs
