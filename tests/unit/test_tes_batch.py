"""The batch script of a TES task (gateway/tes/batch.py), run for real by bash as the
unprivileged user alice (under bubblewrap unless said otherwise), and the parser of what
it leaves behind. apptainer and podman are not installed here: their command lines are
checked by a stand-in `command` that records the words it is given."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.tes.batch import (
    LOGS,
    MANIFEST,
    OUTS,
    ROOT,
    Environment,
    ExecutorRun,
    OutputRun,
    TaskLogs,
    TaskRun,
    check_path,
    log_files,
    parse_logs,
    stop_line,
    task_paths,
    task_script,
    wildcard,
)
from tests.conftest import IN_CI

USER = "alice"
HOST = Environment("host")
LMOD_INIT = "/usr/share/lmod/lmod/init/bash"


def _missing() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (to run the scripts as alice)")
    if shutil.which("bwrap") is None:
        missing.append("bwrap (apt-get install bubblewrap)")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        missing.append(f"the user {USER}")
    return missing


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory of alice's, for job dirs and host files."""
    missing = _missing()
    if missing:
        message = "needs " + ", ".join(missing)
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    path = Path(tempfile.mkdtemp(prefix="hpcfed-tes-batch-"))
    owner = pwd.getpwnam(USER)
    os.chown(path, owner.pw_uid, owner.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _chown(path: Path) -> None:
    subprocess.run(["chown", "-R", f"{USER}:", str(path)], check=True)


class Ran:
    def __init__(self, jobdir: Path, code: int, files: dict[str, bytes | None]) -> None:
        self.jobdir, self.code, self.files = jobdir, code, files
        self.logs: TaskLogs = parse_logs(files)

    def root(self, path: str) -> Path:
        return self.jobdir / ROOT / path.lstrip("/")

    def out(self, index: int) -> str:
        return self.logs.executors[index].stdout


def run_task(place: Path, run: TaskRun, name: str = "job") -> Ran:
    jobdir = place / name
    jobdir.mkdir()
    (jobdir / "script").write_text(task_script(run), encoding="utf-8")
    _chown(jobdir)
    command = f"cd {shlex.quote(str(jobdir))} && bash script"
    done = subprocess.run(
        ["su", USER, "-s", "/bin/bash", "-c", command],
        capture_output=True,
        timeout=120,
        check=False,
    )
    files: dict[str, bytes | None] = {}
    for rel in log_files(len(run.executors)):
        path = jobdir / rel
        files[rel] = path.read_bytes() if path.exists() else None
    return Ran(jobdir, done.returncode, files)


def sh(script: str, **kwargs: object) -> ExecutorRun:
    return ExecutorRun(("sh", "-c", script), HOST, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ executors


def test_executors_run_in_order_sharing_a_volume(place: Path) -> None:
    run = TaskRun(
        executors=(
            sh("echo first > /shared/note; echo one; echo warn >&2"),
            sh("cat /shared/note; echo two"),
        ),
        volumes=("/shared",),
    )
    ran = run_task(place, run)
    assert ran.code == 0
    first, second = ran.logs.executors
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert (first.stdout, first.stderr) == ("one\n", "warn\n")
    assert (second.stdout, second.stderr) == ("first\ntwo\n", "")
    for log in (first, second):
        assert log.start_time is not None and log.end_time is not None
        assert log.start_time <= log.end_time
    assert first.end_time is not None and second.start_time is not None
    assert first.end_time <= second.start_time
    assert ran.logs.failed_executor is None
    assert ran.logs.system == ()
    assert ran.files[MANIFEST] == b""


def test_a_failing_executor_stops_the_task_with_its_own_exit_code(place: Path) -> None:
    run = TaskRun(executors=(sh("echo ran; exit 7"), sh("echo must-not-run > /tmp/x")))
    ran = run_task(place, run)
    assert ran.code == 7
    assert [e.exit_code for e in ran.logs.executors] == [7]
    assert ran.out(0) == "ran\n"
    assert ran.logs.failed_executor == 0
    assert stop_line(0, 7) in ran.logs.system
    assert not ran.root("/tmp/x").exists()
    assert ran.files[f"{LOGS}/exec-1.log"] is None


def test_ignore_error_goes_on(place: Path) -> None:
    run = TaskRun(
        executors=(
            sh("exit 5", ignore_error=True),
            sh("echo after"),
            sh("exit 9", ignore_error=True),
        )
    )
    ran = run_task(place, run)
    assert ran.code == 0
    assert [e.exit_code for e in ran.logs.executors] == [5, 0, 9]
    assert ran.out(1) == "after\n"
    assert ran.logs.failed_executor is None


def test_the_second_executor_failing_is_the_failed_one(place: Path) -> None:
    run = TaskRun(executors=(sh("exit 3", ignore_error=True), sh("exit 4"), sh("true")))
    ran = run_task(place, run)
    assert ran.code == 4
    assert [e.exit_code for e in ran.logs.executors] == [3, 4]
    assert ran.logs.failed_executor == 1


def test_stdin_from_an_input_and_stdout_stderr_to_tes_paths(place: Path) -> None:
    run = TaskRun(
        executors=(
            ExecutorRun(
                ("sh", "-c", "tr a-z A-Z; echo oops >&2"),
                HOST,
                stdin="/data/in.txt",
                stdout="/data/results/upper.txt",
                stderr="/logs/err.txt",
            ),
        ),
        contents=(("/data/in.txt", "hello\n"),),
        outputs=(OutputRun(0, "/data/results/upper.txt"),),
    )
    ran = run_task(place, run)
    assert ran.code == 0
    assert ran.root("/data/results/upper.txt").read_text() == "HELLO\n"
    assert ran.root("/logs/err.txt").read_text() == "oops\n"
    assert ran.out(0) == "" and ran.logs.executors[0].stderr == ""
    [found] = ran.logs.outputs
    assert (found.index, found.path, found.size) == (0, "/data/results/upper.txt", 6)
    assert found.stored == f"{ROOT}/data/results/upper.txt"


TRICKY = (
    "it's \"quoted\" $HOME `id` $(id) \\n \\ back\\slash\n\ttab\nEOF\n'\nnon-ASCII: é ü 漢字 🙂"
)


def test_content_inputs_are_byte_exact(place: Path) -> None:
    run = TaskRun(
        executors=(ExecutorRun(("cat", "/in/tricky", "/in/empty", "/in/nl"), HOST),),
        contents=(("/in/tricky", TRICKY), ("/in/empty", ""), ("/in/nl", "\n\n")),
    )
    ran = run_task(place, run)
    assert ran.code == 0
    assert ran.root("/in/tricky").read_bytes() == TRICKY.encode()  # no trailing newline
    assert ran.root("/in/empty").read_bytes() == b""
    assert ran.root("/in/nl").read_bytes() == b"\n\n"
    assert ran.out(0) == TRICKY + "\n\n"  # what the executor read inside the sandbox


def test_host_inputs_file_and_directory(place: Path) -> None:
    host = place / "host data"
    (host / "tree" / "sub").mkdir(parents=True)
    (host / "one.txt").write_text("one\n")
    (host / "tree" / "a").write_text("A\n")
    (host / "tree" / "sub" / "b").write_text("B\n")
    _chown(host)
    run = TaskRun(
        executors=(sh("cat /data/one.txt /data/tree/a /data/tree/sub/b"),),
        host_inputs=((str(host / "one.txt"), "/data/one.txt"), (str(host / "tree"), "/data/tree")),
    )
    ran = run_task(place, run)
    assert ran.code == 0
    assert ran.out(0) == "one\nA\nB\n"


def test_a_missing_host_input_is_a_system_failure(place: Path) -> None:
    missing = str(place / "no-such-file")
    run = TaskRun(
        executors=(sh("echo must-not-run"),),
        host_inputs=((missing, "/data/in"),),
    )
    ran = run_task(place, run)
    assert ran.code == 70
    assert ran.logs.executors == ()
    assert any(missing in line and "/data/in" in line for line in ran.logs.system)
    assert ran.logs.failed_executor is None


@pytest.mark.parametrize(
    ("runtime", "command"),
    [("none", "/nonexistent/bwrap"), ("apptainer", None), ("podman", "/nonexistent/podman")],
)
def test_a_center_without_its_declared_runtime_is_a_system_failure(
    place: Path, runtime: str, command: str | None
) -> None:
    """Not the executor's failure: a system line names the program, and nothing ran."""
    run = TaskRun(executors=(sh("echo must-not-run"),), runtime=runtime, command=command)  # type: ignore[arg-type]
    ran = run_task(place, run)
    assert ran.code == 70 and ran.logs.executors == ()
    name = command or runtime
    assert any(f"{name} is not installed" in line for line in ran.logs.system), ran.logs.system
    assert ran.logs.failed_executor is None


def test_each_task_has_its_own_tmp(place: Path) -> None:
    name = f"/tmp/hpcfed-tes-probe-{uuid.uuid4().hex}"
    first = TaskRun(
        executors=(sh(f"echo mine > {name}/x"),),
        outputs=(OutputRun(0, f"{name}/x"),),
    )
    second = TaskRun(executors=(sh(f"test ! -e {name} && ls /tmp | wc -l"),))
    ran = run_task(place, first, "first")
    assert ran.code == 0
    assert [o.path for o in ran.logs.outputs] == [f"{name}/x"]
    assert not Path(name).exists()  # the host's /tmp saw nothing
    other = run_task(place, second, "second")
    assert other.code == 0, other.files
    assert other.out(0) == "0\n"  # the host's /tmp content is not visible either


def test_mkdir_tmp_conda_in_two_tasks_in_a_row(place: Path) -> None:
    run = TaskRun(
        executors=(sh("mkdir /tmp/conda && cd /tmp && pwd && ls"),),
        contents=(("/tmp/inputs/Snakefile", "rule all:\n"),),
    )
    for name in ("one", "two"):
        ran = run_task(place, run, name)
        assert ran.code == 0, ran.files
        assert ran.out(0) == "/tmp\nconda\ninputs\n"


def test_workdir_and_default_directory(place: Path) -> None:
    run = TaskRun(
        executors=(ExecutorRun(("pwd",), HOST, workdir="/work/here"), ExecutorRun(("pwd",), HOST))
    )
    ran = run_task(place, run)
    assert ran.code == 0
    assert (ran.out(0), ran.out(1)) == ("/work/here\n", "/tmp\n")


# ------------------------------------------------------------------ outputs


def test_wildcard_outputs_land_under_outs_with_their_sizes(place: Path) -> None:
    run = TaskRun(
        executors=(
            sh(
                "mkdir -p /data/res/deep /data/rest && printf 1 > /data/res/a.txt"
                " && printf 22 > /data/res/b.txt && printf 333 > /data/rest/c.txt"
                " && printf x > /data/res/skip.log && printf 4444 > /data/res/deep/d.txt"
            ),
        ),
        outputs=(
            OutputRun(0, "/data/res/*.txt", "/data/res/"),
            OutputRun(1, "/data/r*/*.txt", "/data/"),
            OutputRun(2, "/data/none-*", "/data/"),
        ),
    )
    ran = run_task(place, run)
    assert ran.code == 0
    got = sorted((o.index, o.path, o.stored, o.size) for o in ran.logs.outputs)
    assert got == [
        (0, "/data/res/a.txt", f"{OUTS}/0/a.txt", 1),
        (0, "/data/res/b.txt", f"{OUTS}/0/b.txt", 2),
        (1, "/data/res/a.txt", f"{OUTS}/1/res/a.txt", 1),
        (1, "/data/res/b.txt", f"{OUTS}/1/res/b.txt", 2),
        (1, "/data/rest/c.txt", f"{OUTS}/1/rest/c.txt", 3),
    ]
    for output in ran.logs.outputs:
        assert (ran.jobdir / output.stored).stat().st_size == output.size
    assert (ran.jobdir / OUTS / "1" / "rest" / "c.txt").read_text() == "333"
    assert not (ran.jobdir / OUTS / "2").exists()


def test_a_directory_output_is_flattened_and_missing_outputs_are_absent(place: Path) -> None:
    run = TaskRun(
        executors=(
            sh(
                "mkdir -p /out/dir/sub/deep && printf a > /out/dir/a"
                " && printf bb > '/out/dir/sub/b b' && printf ccc > /out/dir/sub/deep/c"
                " && exit 2"
            ),
        ),
        outputs=(
            OutputRun(0, "/out/dir/", directory=True),
            OutputRun(1, "/out/missing.txt"),
            OutputRun(2, "/out/dir"),  # a FILE output that is a directory
        ),
    )
    ran = run_task(place, run)
    assert ran.code == 2  # outputs are collected after a failed executor too
    got = sorted((o.index, o.path, o.stored, o.size) for o in ran.logs.outputs)
    assert got == [
        (0, "/out/dir/a", f"{ROOT}/out/dir/a", 1),
        (0, "/out/dir/sub/b b", f"{ROOT}/out/dir/sub/b b", 2),
        (0, "/out/dir/sub/deep/c", f"{ROOT}/out/dir/sub/deep/c", 3),
    ]
    assert any("outputs[2]" in line for line in ran.logs.system)


# ------------------------------------------------------------------ words and environment


WORDS = [
    "$HOME",
    "a b",
    "",
    "'",
    '"',
    "\\",
    "; rm -rf ~",
    "*",
    "$(id)",
    "`id`",
    "line\nbreak",
    "--",
    "-n",
    "漢字",
    "{a,b}",
    "~",
    "!$",
]


def test_argv_words_arrive_verbatim(place: Path) -> None:
    run = TaskRun(executors=(ExecutorRun(("printf", "%s\\0", *WORDS), HOST),))
    ran = run_task(place, run)
    assert ran.code == 0
    assert ran.out(0).split("\0")[:-1] == WORDS


def test_env_is_per_executor_and_setup_applies_to_its_executor_only(place: Path) -> None:
    show = 'printf "%s|%s|%s\\n" "${A-unset}" "${B-unset}" "${GREETING-unset}"'
    greeting = Environment("host", setup=("export GREETING=hello",))
    run = TaskRun(
        executors=(
            ExecutorRun(("sh", "-c", show), greeting, env=(("A", "1 $x 'y'"),)),
            ExecutorRun(("sh", "-c", show), HOST, env=(("B", "2"),)),
        )
    )
    ran = run_task(place, run)
    assert ran.code == 0
    assert ran.out(0) == "1 $x 'y'|unset|hello\n"
    assert ran.out(1) == "unset|2|unset\n"


@pytest.mark.parametrize("lmod", [False, True])
def test_a_failing_setup_line_is_a_system_failure(place: Path, lmod: bool) -> None:
    if lmod and not Path(LMOD_INIT).exists():
        pytest.skip("no Lmod here")  # make system-deps installs it
    setup = (f". {LMOD_INIT}", "module load hpcfed-no-such-module") if lmod else ("false",)
    run = TaskRun(
        executors=(
            sh("echo fine"),
            ExecutorRun(("sh", "-c", "echo must-not-run"), Environment("broken", setup)),
            sh("echo must-not-run"),
        )
    )
    ran = run_task(place, run)
    assert ran.code == 70
    assert [e.exit_code for e in ran.logs.executors] == [0]  # the second never started
    assert ran.logs.failed_executor is None
    assert any("executors[1]" in line and "setup" in line for line in ran.logs.system)
    if lmod:
        assert any("hpcfed-no-such-module" in line for line in ran.logs.system)


def test_sandbox_none_uses_the_host_paths(place: Path) -> None:
    base = f"/tmp/hpcfed-tes-none-{uuid.uuid4().hex}"
    run = TaskRun(
        executors=(
            ExecutorRun(
                ("sh", "-c", 'pwd; echo "$V"; cp in.txt out/copy.txt; printf zz > out/z.dat'),
                HOST,
                workdir=f"{base}/work",
                env=(("V", "a b"),),
            ),
        ),
        contents=((f"{base}/work/in.txt", "payload"),),
        outputs=(
            OutputRun(0, f"{base}/work/out/copy.txt"),
            OutputRun(1, f"{base}/work/out/*.dat", f"{base}/work/out"),
        ),
        volumes=(f"{base}/work/out",),
        sandbox="none",
    )
    try:
        ran = run_task(place, run)
        assert ran.code == 0, ran.files
        assert ran.out(0) == f"{base}/work\na b\n"
        assert Path(f"{base}/work/out/copy.txt").read_text() == "payload"  # on the host
        got = sorted((o.index, o.path, o.stored, o.size) for o in ran.logs.outputs)
        assert got == [
            (0, f"{base}/work/out/copy.txt", f"{ROOT}{base}/work/out/copy.txt", 7),
            (1, f"{base}/work/out/z.dat", f"{OUTS}/1/z.dat", 2),
        ]
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ containers


def _recorder(place: Path) -> str:
    """A stand-in for apptainer/podman: prints each word it is given, NUL-terminated."""
    path = place / "bin dir" / "recorder"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\"\n")
    path.chmod(0o755)
    _chown(path.parent)
    return str(path)


def _words(ran: Ran, index: int = 0) -> list[str]:
    return ran.out(index).split("\0")[:-1]


def test_apptainer_command_line(place: Path) -> None:
    run = TaskRun(
        executors=(
            ExecutorRun(
                ("python", "-c", "print('$x')"),
                Environment("ubuntu:22.04"),
                workdir="/data/w",
                env=(("A", "1 2"), ("L", "a,b")),
            ),
            ExecutorRun(("true",), Environment("/images/tool.sif")),
            ExecutorRun(("true",), Environment("library://lib/tool:1")),
        ),
        contents=(("/in/x", "x"),),
        runtime="apptainer",
        command=_recorder(place),
    )
    ran = run_task(place, run)
    assert ran.code == 0, ran.files
    root = str(ran.jobdir / ROOT)
    first = _words(ran, 0)
    # APPTAINERENV_L went to the recorder's environment (a comma-holding value), not its words
    assert first[:2] == ["exec", "--containall"]
    binds = first[2:6]
    assert binds == ["--bind", f"{root}/in:/in", "--bind", f"{root}/data:/data"]
    assert first[6:] == [
        "--pwd",
        "/data/w",
        "--env",
        "A=1 2",
        "docker://ubuntu:22.04",
        "python",
        "-c",
        "print('$x')",
    ]
    assert _words(ran, 1)[-2:] == ["/images/tool.sif", "true"]
    assert _words(ran, 2)[-2:] == ["library://lib/tool:1", "true"]
    assert "--pwd" not in _words(ran, 1)
    script = task_script(run)
    assert "APPTAINERENV_L=a,b" in script


def test_podman_command_line(place: Path) -> None:
    run = TaskRun(
        executors=(
            ExecutorRun(
                ("sh", "-c", "echo $A"),
                Environment("quay.io/biocontainers/samtools:1.19"),
                workdir="/data",
                env=(("A", "x y,z"),),
            ),
        ),
        runtime="podman",
        command=_recorder(place),
    )
    ran = run_task(place, run)
    assert ran.code == 0, ran.files
    root = str(ran.jobdir / ROOT)
    assert _words(ran) == [
        "run",
        "--rm",
        "-i",
        "--network=host",
        "-v",
        f"{root}/data:/data",
        "-w",
        "/data",
        "-e",
        "A=x y,z",
        "quay.io/biocontainers/samtools:1.19",
        "sh",
        "-c",
        "echo $A",
    ]
    assert "--dev" not in task_script(run) and "/tmp" not in _words(ran)


# ------------------------------------------------------------------ checks and parsing


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("data/x", "not an absolute path"),
        ("/data/../etc/passwd", "'..'"),
        ("/..", "'..'"),
        ("/", "root directory"),
        ("//./", "root directory"),
        ("/usr/bin/x", "/usr"),
        ("/proc/self", "/proc"),
        ("/a\nb", "control character"),
        ("", "required"),
    ],
)
def test_check_path_refuses(path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=r"^inputs\[3\]\.path: ") as caught:
        check_path(path, "inputs[3].path")
    assert reason in str(caught.value)


def test_check_path_normalizes() -> None:
    assert check_path("/data//x/./y/", "f") == "/data/x/y"
    assert check_path("/a..b/..c", "f") == "/a..b/..c"


def test_task_script_names_the_field() -> None:
    good = sh("true")
    cases = [
        (TaskRun(executors=(good, replace(good, stdout="../x"))), r"^executors\[1\]\.stdout: "),
        (TaskRun(executors=(replace(good, workdir="/a/../.."),)), r"^executors\[0\]\.workdir: "),
        (TaskRun(executors=(good,), outputs=(OutputRun(4, "out"),)), r"^outputs\[4\]\.path: "),
        (
            TaskRun(executors=(good,), outputs=(OutputRun(0, "/d/*.txt"),)),
            r"^outputs\[0\]\.path_prefix: ",
        ),
        (
            TaskRun(executors=(good,), outputs=(OutputRun(0, "/d/*.txt", "/e/"),)),
            r"^outputs\[0\]\.path_prefix: ",
        ),
        (TaskRun(executors=(good,), outputs=(OutputRun(0, "/*.txt", "/"),)), r"^outputs\[0\]"),
        (TaskRun(executors=(good,), contents=(("/a", "x\0y"),)), r"^inputs\[0\]\.content: "),
        (TaskRun(executors=(good,), volumes=("/ok", "rel")), r"^volumes\[1\]: "),
        (TaskRun(executors=(replace(good, argv=()),)), r"^executors\[0\]\.command: "),
        (TaskRun(executors=(replace(good, env=(("A=B", "x"),)),)), r"^executors\[0\]\.env: "),
        (
            TaskRun(executors=(ExecutorRun(("x",), Environment("--privileged")),)),
            r"^executors\[0\]\.image: ",
        ),
        (
            TaskRun(executors=(good,), volumes=("/a:b",), runtime="podman"),
            r"^paths: /a:b",
        ),
    ]
    for run, field in cases:
        with pytest.raises(ValueError, match=field):
            task_script(run)


def test_task_paths_and_wildcard() -> None:
    run = TaskRun(
        executors=(ExecutorRun(("x",), HOST, workdir="/w/", stdout="/data/o"),),
        contents=(("/data/in", "x"),),
        staged=("/data/in",),
        outputs=(OutputRun(0, "/data/*.txt", "/data"),),
        volumes=("/v",),
    )
    assert task_paths(run) == ["/data/in", "/w", "/data/o", "/v", "/data/*.txt"]
    assert [wildcard(p) for p in ("/a/*.txt", "/a/?", "/a/[ab]", "/a/b")] == [
        True,
        True,
        True,
        False,
    ]


def test_parse_logs_of_a_job_that_was_killed_or_left_nothing() -> None:
    assert parse_logs({name: None for name in log_files(2)}) == TaskLogs((), (), ())
    files: dict[str, bytes | None] = {name: None for name in log_files(2)}
    files[f"{LOGS}/exec-0.log"] = (
        b"start 2024-05-01T10:00:00.000001Z\nexit 0\nend 2024-05-01T10:00:01Z\n"
    )
    files[f"{LOGS}/exec-1.log"] = b"start 2024-05-01T10:00:02Z\n"  # killed while running
    files[f"{LOGS}/exec-1.out"] = "é".encode() * 10
    files[MANIFEST] = b"0\t/a\ttes/root/a\t3\nbroken line\n1\t/b\ttes/root/b\tnot-a-size\n"
    logs = parse_logs(files, tail=5)
    first, second = logs.executors
    assert first.exit_code == 0 and first.end_time is not None
    assert first.start_time is not None and first.start_time.microsecond == 1
    assert (second.exit_code, second.end_time) == (None, None)
    assert second.stdout == "éé"  # the tail starts at a character, not inside one
    assert [(o.index, o.path, o.stored, o.size) for o in logs.outputs] == [
        (0, "/a", "tes/root/a", 3)
    ]
    assert logs.failed_executor is None
    files[f"{LOGS}/system.log"] = (stop_line(1, 137) + "\n").encode()
    assert parse_logs(files).failed_executor == 1
