"""Array jobs: status_many replayed over remote exchanges recorded on the testbed, and the
settling of elements from what the scheduler lists and what the job directory holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.base import NOT_LISTED, ArrayElement, JobState, NativeStatus
from adapters.batch.adapter import JobDirAdapter
from adapters.batch.markers import ElementMarkers, JobMarkers, Termination
from adapters.batch.settle import aggregate, settle_array
from adapters.pbs.adapter import PbsAdapter
from adapters.slurm.adapter import SlurmAdapter
from adapters.transport.keys import KeyFile
from adapters.transport.ssh import CommandResult, SSHPool, SSHTarget

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
C, F, Q, R = JobState.COMPLETED, JobState.FAILED, JobState.QUEUED, JobState.RUNNING
X, T = JobState.CANCELLED, JobState.TIMEOUT


def flow(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


class Replay:
    """Answers each remote command with the next recorded exchange, checking that the
    adapter sends the command and stdin that were recorded."""

    exchanges: list[dict]

    async def root(self) -> str:
        return "/home/alice/.hpcfed"

    async def run(self, command: str, stdin: bytes | None = None) -> CommandResult:
        assert self.exchanges, f"no recorded answer for {command[:80]!r}"
        recorded = self.exchanges.pop(0)
        assert command == recorded["command"]
        assert (stdin or b"").decode() == recorded["stdin"]
        self.remote_commands += 1  # type: ignore[attr-defined]
        return CommandResult(
            recorded["exit_status"], recorded["stdout"].encode(), recorded["stderr"].encode()
        )


class ReplaySlurm(Replay, SlurmAdapter):
    pass


class ReplayPbs(Replay, PbsAdapter):
    pass


def replaying(cls: type[JobDirAdapter], center: str, exchanges: list[dict]) -> JobDirAdapter:
    target = SSHTarget(center, "127.0.0.1", 22201, "alice", KeyFile("/k"), ("ssh-ed25519 AAAA",))
    adapter = cls(target, SSHPool())
    adapter.exchanges = list(exchanges)  # type: ignore[attr-defined]
    return adapter


def elements(status: NativeStatus) -> list[tuple[int, str, JobState, int | None]]:
    return [(e.index, e.native_id, e.state, e.exit_code) for e in status.elements]


def element_times(status: NativeStatus) -> list[tuple[float | None, float | None]]:
    return [(e.started_at, e.ended_at) for e in status.elements]


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def test_slurm_array_while_it_runs_lists_every_element_in_two_commands() -> None:
    recorded = flow("slurm/array_flow.json")["running"]
    adapter = replaying(ReplaySlurm, "centera", recorded["exchanges"])
    (native_id,) = recorded["jobs"]
    status = (await adapter.status_many(recorded["jobs"]))[native_id]
    assert adapter.remote_commands == 2  # squeue, then the job directory
    assert elements(status) == [
        (0, "1776_0", C, 0),
        (1, "1776_1", F, 3),
        (2, "1776_2", R, None),
        (3, "1776_3", R, None),
        (4, "1776_4", Q, None),  # pending behind the %2 limit, from "1776_4" (or "1776_[4]")
    ]
    assert (status.state, status.exit_code) == (R, None)
    assert status.elements[4].reason == "JobArrayTaskLimit"
    # Each element's own times.<index>; the running ones' start only, the waiting one none.
    assert element_times(status) == [
        (1796146673.486118, 1796146673.491070),
        (1796146673.484036, 1796146673.488123),
        (1796146673.570246, None),
        (1796146673.570898, None),
        (None, None),
    ]
    assert (status.started_at, status.ended_at) == (1796146673.484036, None)


async def test_slurm_array_cancelled_keeps_the_ends_its_elements_had_before() -> None:
    recorded = flow("slurm/array_flow.json")["cancelled"]
    adapter = replaying(ReplaySlurm, "centera", recorded["exchanges"])
    (native_id,) = recorded["jobs"]
    status = (await adapter.status_many(recorded["jobs"]))[native_id]
    assert elements(status) == [
        (0, "1776_0", C, 0),
        (1, "1776_1", F, 3),  # failed on its own before the cancel
        (2, "1776_2", X, 143),  # running when cancelled: SIGTERM, then its exit status
        (3, "1776_3", X, 143),
        (4, "1776_4", X, None),  # never started
    ]
    assert (status.state, status.exit_code) == (F, 143)  # the worst end, the highest code
    cancelled_at = 1796146674.0  # squeue: "1776_4|CANCELLED|...|<start>|<end>|"
    assert element_times(status) == [
        (1796146673.486118, 1796146673.491070),
        (1796146673.484036, 1796146673.488123),
        (1796146673.570246, 1796146674.032031),  # the end job.sh's TERM trap wrote
        (1796146673.570898, 1796146674.030815),
        (None, cancelled_at),  # Slurm's start = end stamp of a cancel before it started
    ]
    assert (status.started_at, status.ended_at) == (1796146673.484036, 1796146674.032031)


async def test_torque_wrapper_array_is_known_by_its_marker_and_elements_by_their_ids() -> None:
    recorded = flow("pbs/torque_slurm_array_flow.json")["running"]
    adapter = replaying(ReplayPbs, "centerc", recorded["exchanges"])
    (native_id,) = recorded["jobs"]
    status = (await adapter.status_many(recorded["jobs"]))[native_id]
    # qstat + the `array` markers, then the markers, qstat of the elements' own ids
    # and the markers again, in one command.
    assert adapter.remote_commands == 2
    assert elements(status) == [
        (0, "397", C, 0),  # Slurm's qstat: plain ids of their own, recorded in started.<i>
        (1, "398", F, 3),
        (2, "399", R, None),
        (3, "400", R, None),
        (4, "396", Q, None),  # not started: waits under the array's id while it is queued
    ]
    assert status.state is R
    assert element_times(status) == [
        (1796145204.411354, 1796145204.427598),
        (1796145204.408133, 1796145204.424545),
        (1796145204.548136, None),  # running: the qstat's ctime is a forecast, not an end
        (1796145204.561829, None),
        (None, None),
    ]


async def test_torque_wrapper_array_cancelled_by_qdel_ends_cancelled() -> None:
    recorded = flow("pbs/torque_slurm_array_flow.json")["cancelled"]
    adapter = replaying(ReplayPbs, "centerc", recorded["exchanges"])
    (native_id,) = recorded["jobs"]
    status = (await adapter.status_many(recorded["jobs"]))[native_id]
    assert adapter.remote_commands == 2
    # Elements 2-3 got SIGTERM (exit 143, `terminated`), 4 never ran; 1 had failed before.
    assert [(i, state, code) for i, _, state, code in elements(status)] == [
        (0, C, 0),
        (1, F, 3),
        (2, X, 143),
        (3, X, 143),
        (4, X, None),
    ]
    assert status.state is F and status.exit_code == 143
    assert element_times(status) == [
        (1796145204.411354, 1796145204.427598),
        (1796145204.408133, 1796145204.424545),
        (1796145204.548136, 1796145205.314011),
        (1796145204.561829, 1796145205.306812),
        (None, None),  # never ran, and qstat's record of the array is no element's
    ]


async def test_torque_wrapper_job_killed_at_its_walltime_is_timeout() -> None:
    recorded = flow("pbs/torque_slurm_timeout_flow.json")["timeout"]
    adapter = replaying(ReplayPbs, "centerc", recorded["exchanges"])
    (native_id,) = recorded["jobs"]
    status = (await adapter.status_many(recorded["jobs"]))[native_id]
    assert (status.state, status.native_state, status.exit_code) == (T, "C", 143)
    assert "terminated by the scheduler" in (status.reason or "")
    assert "walltime of 60 s exceeded" in (status.reason or "")
    # job.sh's times (qstat's mtime/ctime say 17:13:27 and 17:14:52 of the same run).
    assert (status.started_at, status.ended_at) == (1796145207.402650, 1796145292.545009)
    assert status.ended_at - utc("2026-12-01T17:14:52") < 1  # type: ignore[operator]


async def test_a_failing_element_query_is_an_unavailable_center_not_vanished_elements() -> None:
    recorded = flow("pbs/torque_slurm_array_flow.json")["running"]
    exchanges = [dict(e) for e in recorded["exchanges"]]
    out = exchanges[1]["stdout"]
    exchanges[1]["stdout"] = out.replace("--hpcfed-markers-- 0", "--hpcfed-markers-- 255", 1)
    adapter = replaying(ReplayPbs, "centerc", exchanges)
    with pytest.raises(Exception, match="qstat failed"):
        await adapter.status_many(recorded["jobs"])


# ------------------------------------------------------------ settling, from markers


def element_id(index: int, started: str | None) -> str:
    return f"7_{index}"


def listed(index: int, state: JobState, native: str, code: int | None = None) -> ArrayElement:
    return ArrayElement(index, f"7_{index}", state, native, None, code)


def test_every_index_of_the_spec_is_reported_once_the_array_left_the_queue() -> None:
    markers = JobMarkers(
        native_id="7",
        array="0-6:2%1",
        elements={
            0: ElementMarkers(started="8", exit_code=0),
            2: ElementMarkers(started="9", exit_code=5),
            4: ElementMarkers(started="10", exit_code=143, terminated=Termination(3600, 3600)),
            6: ElementMarkers(started="11", exit_code=0),
        },
    )
    status = settle_array("7", None, markers, element_id, lists_pending=True)
    assert [(e.index, e.state, e.exit_code) for e in status.elements] == [
        (0, C, 0),
        (2, F, 5),
        (4, T, 143),
        (6, C, 0),
    ]
    assert status.elements[2].native_state == "LEFT_QUEUE"
    assert (status.state, status.exit_code) == (F, 143)


def test_an_element_gone_without_an_end_in_its_files_keeps_the_array_unended() -> None:
    markers = JobMarkers(
        native_id="7",
        array="0-1",
        elements={0: ElementMarkers(started="8", exit_code=0), 1: ElementMarkers(started="9")},
    )
    status = settle_array("7", None, markers, element_id, lists_pending=True)
    assert [(e.state, e.native_state) for e in status.elements] == [
        (C, "LEFT_QUEUE"),
        (JobState.UNKNOWN, NOT_LISTED),
    ]
    assert status.unlisted and not status.state.is_terminal


def test_elements_that_never_started_wait_only_while_the_array_is_queued() -> None:
    # Element 0 started but had no id to ask the scheduler about.
    markers = JobMarkers(native_id="7", array="0-2", elements={0: ElementMarkers(started="")})
    queued = NativeStatus("7", Q, "Q")
    waiting = settle_array("7", queued, markers, element_id, lists_pending=False)
    assert [e.state for e in waiting.elements] == [R, Q, Q]
    # Gone from the scheduler with no end in the files: not ended, asked about again.
    gone = settle_array("7", None, markers, element_id, lists_pending=False)
    assert [e.native_state for e in gone.elements] == [NOT_LISTED] * 3
    assert not gone.state.is_terminal
    cancelled = JobMarkers(native_id="7", array="0-2", cancelled=True)
    assert {
        e.state
        for e in settle_array("7", None, cancelled, element_id, lists_pending=False).elements
    } == {X}


def test_a_listed_element_that_ended_after_the_listing_takes_its_end_from_its_files() -> None:
    markers = JobMarkers(native_id="7", array="0-1", elements={1: ElementMarkers("8", 0)})
    seen = aggregate("7", [listed(0, R, "RUNNING"), listed(1, Q, "PENDING")])
    status = settle_array("7", seen, markers, element_id, lists_pending=True)
    assert [(e.state, e.exit_code) for e in status.elements] == [(R, None), (C, 0)]


def test_each_element_keeps_its_own_times_and_the_array_spans_them() -> None:
    markers = JobMarkers(
        native_id="7",
        array="0-2",
        elements={
            0: ElementMarkers("8", 0, started_at=100.0, ended_at=110.0),
            1: ElementMarkers("", started_at=105.0),  # running, without an id to ask about
        },
    )
    # The array still at the scheduler, which lists element 2 with its own times (the
    # files have none).
    two = ArrayElement(2, "7_2", C, "COMPLETED", None, 0, 103.0, 120.0)
    seen = NativeStatus("7", R, "R", elements=(two,))
    status = settle_array("7", seen, markers, element_id, lists_pending=False)
    assert [(e.index, e.state, e.started_at, e.ended_at) for e in status.elements] == [
        (0, C, 100.0, 110.0),
        (1, R, 105.0, None),
        (2, C, 103.0, 120.0),
    ]
    assert (status.state, status.started_at, status.ended_at) == (R, 100.0, None)
    ended = JobMarkers(
        native_id="7",
        array="0-1",
        elements={
            0: ElementMarkers("8", 0, started_at=100.0, ended_at=110.0),
            1: ElementMarkers("9", 0, started_at=105.0, ended_at=130.0),
        },
    )
    whole = settle_array("7", None, ended, element_id, lists_pending=True)
    assert (whole.state, whole.started_at, whole.ended_at) == (C, 100.0, 130.0)


def test_files_of_another_submission_are_not_read_as_this_arrays() -> None:
    markers = JobMarkers(native_id="6", array="0-1", elements={0: ElementMarkers("8", 0)})
    status = settle_array("7", None, markers, element_id, lists_pending=True)
    assert status.elements == ()  # no spec of its own known, nothing listed
    assert status.state is JobState.UNKNOWN


@pytest.mark.parametrize(
    "states,whole",
    [
        ((Q, Q, Q), Q),
        ((C, R, Q), R),
        ((C, C, Q), Q),
        ((JobState.HELD, JobState.HELD), JobState.HELD),
        ((JobState.HELD, Q), Q),
        ((C, C, C), C),
        ((C, F, C), F),
        ((C, T, X), T),
        ((C, X), X),
        ((JobState.UNKNOWN, C), JobState.UNKNOWN),
    ],
)
def test_array_state_follows_its_elements_as_the_gateway_decides(states, whole) -> None:
    status = aggregate("7", [listed(i, s, s.value) for i, s in enumerate(states)])
    assert status.state is whole


def test_array_summary_counts_its_elements() -> None:
    status = aggregate("7", [listed(0, C, "COMPLETED", 0), listed(1, R, "RUNNING")])
    assert (status.native_state, status.reason) == ("COMPLETED,RUNNING", "1 COMPLETED, 1 RUNNING")
