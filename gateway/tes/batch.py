"""The batch script of a TES task, and the parser of the files it leaves behind.

A TES task is one batch job; `task_script` is the body of its user script (bash, run with
the job's directory as the working directory, no shebang, no scheduler directives). Inside
the job directory:

- `tes/root/` (ROOT): the task's private filesystem. The TES path P (absolute) lives at
  ROOT + P. Inputs given as hpcfed:// URLs are already there (`TaskRun.staged`); the script
  writes `content` inputs there and copies `file://` inputs (`TaskRun.host_inputs`) there.
- `tes/log/` (LOGS): per executor N, `exec-N.log` (lines `start <time>`, `exit <code>`,
  `end <time>`), `exec-N.out` and
  `exec-N.err` (its stdout/stderr when the executor names no TES path for them); and
  `system.log`: lines about what went wrong around the executors (a missing input, a
  failing setup line, with that line's output, the executor whose exit code stopped the
  task: `stop_line`) and the output of the setup lines.
- `tes/out/<index>/` (OUTS): the matches of wildcard output `index`, each at its path
  minus the output's path_prefix.
- `tes/outputs.tsv` (MANIFEST): `index<TAB>TES path<TAB>stored<TAB>size` for every output
  file found (stored: relative to the job directory; a directory output is one line per
  file inside it, symlinks left out). A missing output has no line; the gateway decides.

The script: creates the directories; writes and copies the inputs (a missing host input:
a system line, exit 70, no executor runs); runs the executors in order, each in a
subshell that first runs its environment's setup lines (outside any sandbox or container;
a failing one: a system line, exit 70) and then the executor with its own `env`. A
non-zero exit without ignore_error stops the task: the script exits with that code. The
outputs are collected in every case once the executors have started.

How an executor runs (`TaskRun.runtime`, `TaskRun.sandbox`):

- runtime none, sandbox bubblewrap: under `bwrap`, with a root built from the host's
  (every top-level entry of `/` bound, symlinks such as /bin -> usr/bin recreated), a
  fresh /dev (GPU and InfiniBand devices bound from the host when present) and /proc, and
  then ROOT/T bound over /T for every top-level directory T the task's paths use, and
  always over /tmp. Each task so sees its own /tmp, /data, ...: the host's own /tmp (or
  /data) content is NOT visible to the task. Runs with the user's own uid. Without a
  workdir an executor starts in /tmp (the task's private one). A file directly under /
  that is not an input (an output such as /out.txt) is not kept: write outputs in a
  directory. A failure of bwrap itself counts as the executor's.
- runtime none, sandbox none: the TES paths are the host's own paths. Before the
  executors every input is copied from ROOT + P to P (and the volumes, workdirs and
  parents of the paths are created on the host); after them every output found at P is
  copied back to ROOT + P. No isolation. Without a workdir an executor starts in ROOT.
- runtime apptainer: `apptainer exec --containall --bind ROOT/T:/T ... [--pwd W]
  [--env K=V] IMAGE ARGV`, IMAGE `docker://<image>` unless the image is an absolute path
  (a .sif) or already has a scheme. A value with a comma (which `--env` would split) is
  passed as APPTAINERENV_K instead.
- runtime podman: `podman run --rm -i --network=host -v ROOT/T:/T ... [-w W] [-e K=V]
  IMAGE ARGV`.

stdin/stdout/stderr TES paths are opened by the script itself (outside the sandbox or
container), at ROOT + P (sandbox none: at P). Without stdin an executor reads /dev/null.

Every word from the task is quoted with shlex.quote. A path that could leave ROOT
(relative, a `..` component) or that names the root itself or a system directory
(/usr, /etc, /dev, ... which no task may replace) is refused with a ValueError whose
message starts with the field, e.g. `executors[1].stdout: ...`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from shlex import quote
from typing import Literal

ROOT = "tes/root"
LOGS = "tes/log"
OUTS = "tes/out"
MANIFEST = "tes/outputs.tsv"

#: The job's exit code when the task failed around its executors (inputs, setup).
SYSTEM_FAILURE = 70

#: Top-level directories a task path may not be under: replacing them (by a bind of the
#: task's own directory) would take the system away from the executor.
RESERVED_TOPS = frozenset(
    {"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "sys", "usr"}
)

#: Where an executor without a workdir starts under bubblewrap: the task's own /tmp.
SANDBOX_WORKDIR = "/tmp"  # noqa: S108

_GLOB = re.compile(r"[*?\[]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SYSTEM_LOG = f"{LOGS}/system.log"


@dataclass(frozen=True)
class Environment:
    """How an executor's image is provided at the center."""

    image: str
    #: Shell lines run before the executor, outside any sandbox or container (module
    #: loads, PATH exports); their environment is inherited by the executor.
    setup: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecutorRun:
    argv: tuple[str, ...]
    environment: Environment
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    ignore_error: bool = False


@dataclass(frozen=True)
class OutputRun:
    index: int
    path: str
    path_prefix: str | None = None
    directory: bool = False


@dataclass(frozen=True)
class TaskRun:
    executors: tuple[ExecutorRun, ...]
    contents: tuple[tuple[str, str], ...] = ()
    host_inputs: tuple[tuple[str, str], ...] = ()
    staged: tuple[str, ...] = ()
    outputs: tuple[OutputRun, ...] = ()
    volumes: tuple[str, ...] = ()
    runtime: Literal["none", "apptainer", "podman"] = "none"
    sandbox: Literal["bubblewrap", "none"] = "bubblewrap"
    command: str | None = None


@dataclass(frozen=True)
class ExecutorLog:
    exit_code: int | None
    start_time: datetime | None
    end_time: datetime | None
    stdout: str
    stderr: str


@dataclass(frozen=True)
class OutputFile:
    index: int
    path: str
    stored: str
    size: int


@dataclass(frozen=True)
class TaskLogs:
    #: The executors that started, in order (a prefix of the task's executors).
    executors: tuple[ExecutorLog, ...]
    outputs: tuple[OutputFile, ...]
    system: tuple[str, ...]

    @property
    def failed_executor(self) -> int | None:
        """The executor that exited non-zero without ignore_error and so stopped the task:
        from the system line the script writes then (`stop_line`)."""
        for line in self.system:
            found = _STOPPED.fullmatch(line)
            if found:
                return int(found.group(1))
        return None


def stop_line(index: int, code: int | str) -> str:
    """The system log line of the executor whose exit code stopped the task."""
    return f"executors[{index}] exited with code {code}: the task stopped there"


_STOPPED = re.compile(re.escape(stop_line(999, 999)).replace("999", r"(\d+)"))


def wildcard(path: str) -> bool:
    """Whether `path` holds POSIX glob characters (`*`, `?`, `[`)."""
    return _GLOB.search(path) is not None


def check_path(path: str, field: str) -> str:
    """`path` (a TES path) normalized (no empty or `.` components, no trailing slash);
    ValueError naming `field` when it could leave ROOT or names what no task may use."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"{field}: a path is required")
    if _CONTROL.search(path):
        raise ValueError(f"{field}: {path!r} holds a control character")
    if not path.startswith("/"):
        raise ValueError(f"{field}: {path!r} is not an absolute path")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{field}: {path!r} has a '..' component")
    if not parts:
        raise ValueError(f"{field}: {path!r} names the root directory")
    if parts[0] in RESERVED_TOPS:
        raise ValueError(f"{field}: {path!r} is under /{parts[0]}, which a task cannot use")
    return "/" + "/".join(parts)


def _check_host(path: str, field: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        raise ValueError(f"{field}: {path!r} is not an absolute host path")
    return path


def _check_text(text: str, field: str) -> str:
    if "\x00" in text:
        raise ValueError(f"{field}: a NUL character cannot be passed")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{field}: not UTF-8 text") from error
    return text


@dataclass(frozen=True)
class _Output:
    index: int
    path: str  # normalized
    prefix: str  # normalized, "" without wildcards
    directory: bool

    @property
    def glob(self) -> bool:
        return wildcard(self.path)


@dataclass(frozen=True)
class _Executor:
    index: int
    run: ExecutorRun
    workdir: str | None
    stdin: str | None
    stdout: str | None
    stderr: str | None


@dataclass(frozen=True)
class _Plan:
    """A TaskRun with every path checked and normalized."""

    run: TaskRun
    contents: tuple[tuple[str, str], ...]
    host_inputs: tuple[tuple[str, str], ...]
    staged: tuple[str, ...]
    outputs: tuple[_Output, ...]
    volumes: tuple[str, ...]
    executors: tuple[_Executor, ...]

    def paths(self) -> list[str]:
        found: dict[str, None] = {}
        found.update((path, None) for path, _ in self.contents)
        found.update((path, None) for _, path in self.host_inputs)
        found.update((path, None) for path in self.staged)
        for executor in self.executors:
            for path in (executor.workdir, executor.stdin, executor.stdout, executor.stderr):
                if path is not None:
                    found[path] = None
        found.update((path, None) for path in self.volumes)
        found.update((output.path, None) for output in self.outputs)
        return list(found)

    def directories(self) -> list[str]:
        """What must be a directory under ROOT before the executors: parents of every
        path (up to a wildcard), volumes, workdirs, directory outputs."""
        found: dict[str, None] = {}
        if self.run.runtime == "none" and self.run.sandbox == "bubblewrap":
            found[SANDBOX_WORKDIR] = None
        for path in self.paths():
            parts = path.split("/")[1:-1]
            literal: list[str] = []
            for part in parts:
                if wildcard(part):
                    break
                literal.append(part)
            if literal:
                found["/" + "/".join(literal)] = None
        found.update((path, None) for path in self.volumes)
        found.update((e.workdir, None) for e in self.executors if e.workdir is not None)
        found.update((o.path, None) for o in self.outputs if o.directory and not o.glob)
        return list(found)

    def tops(self) -> list[str]:
        found: dict[str, None] = {}
        if self.run.runtime == "none" and self.run.sandbox == "bubblewrap":
            found["tmp"] = None
        found.update((path.split("/")[1], None) for path in self.paths())
        return list(found)


def _plan(run: TaskRun) -> _Plan:
    if run.runtime not in ("none", "apptainer", "podman"):
        raise ValueError(f"runtime: {run.runtime!r} is not none, apptainer or podman")
    if run.sandbox not in ("bubblewrap", "none"):
        raise ValueError(f"sandbox: {run.sandbox!r} is not bubblewrap or none")
    if not run.executors:
        raise ValueError("executors: at least one executor is required")
    contents = tuple(
        (
            check_path(path, f"inputs[{i}].path"),
            _check_text(text, f"inputs[{i}].content"),
        )
        for i, (path, text) in enumerate(run.contents)
    )
    host_inputs = tuple(
        (_check_host(host, f"inputs[{i}].url"), check_path(path, f"inputs[{i}].path"))
        for i, (host, path) in enumerate(run.host_inputs)
    )
    staged = tuple(check_path(path, f"inputs[{i}].path") for i, path in enumerate(run.staged))
    outputs = tuple(_check_output(output) for output in run.outputs)
    volumes = tuple(check_path(path, f"volumes[{i}]") for i, path in enumerate(run.volumes))
    executors = tuple(_check_executor(i, executor) for i, executor in enumerate(run.executors))
    plan = _Plan(run, contents, host_inputs, staged, outputs, volumes, executors)
    if run.runtime != "none":
        for top in plan.tops():
            if ":" in top or "," in top:
                raise ValueError(
                    f"paths: /{top}: a top-level directory with ':' or ',' cannot be bound"
                    f" by {run.runtime}"
                )
    return plan


def _check_output(output: OutputRun) -> _Output:
    field = f"outputs[{output.index}]"
    path = check_path(output.path, f"{field}.path")
    if not wildcard(path):
        return _Output(output.index, path, "", output.directory)
    if wildcard(path.split("/")[1]):
        raise ValueError(f"{field}.path: {output.path!r}: a wildcard in the top-level directory")
    if not output.path_prefix:
        raise ValueError(f"{field}.path_prefix: required with a wildcard in the path")
    prefix = check_path(output.path_prefix, f"{field}.path_prefix")
    if wildcard(prefix) or not path.startswith(prefix) or prefix == path:
        raise ValueError(
            f"{field}.path_prefix: {output.path_prefix!r} is not a literal beginning of the path"
        )
    return _Output(output.index, path, prefix, output.directory)


def _check_executor(index: int, executor: ExecutorRun) -> _Executor:
    field = f"executors[{index}]"
    if not executor.argv:
        raise ValueError(f"{field}.command: a command is required")
    for word in executor.argv:
        _check_text(word, f"{field}.command")
    image = executor.environment.image
    if not image or image.startswith("-") or _CONTROL.search(image):
        raise ValueError(f"{field}.image: {image!r} is not an image name")
    for name, value in executor.env:
        if not name or "=" in name or _CONTROL.search(name):
            raise ValueError(f"{field}.env: {name!r} is not a variable name")
        _check_text(value, f"{field}.env")

    def path(value: str | None, name: str) -> str | None:
        return None if value is None else check_path(value, f"{field}.{name}")

    return _Executor(
        index,
        executor,
        path(executor.workdir, "workdir"),
        path(executor.stdin, "stdin"),
        path(executor.stdout, "stdout"),
        path(executor.stderr, "stderr"),
    )


def task_paths(run: TaskRun) -> list[str]:
    """Every TES path the task names (normalized, each once, outputs as patterns);
    ValueError as `check_path` for a path that cannot be used."""
    return _plan(run).paths()


def log_files(executors: int) -> list[str]:
    """The files (relative to the job directory) the gateway reads back after the job,
    for `parse_logs`."""
    files = [f"{LOGS}/exec-{i}.{kind}" for i in range(executors) for kind in ("log", "out", "err")]
    return [*files, _SYSTEM_LOG, MANIFEST]


def _rel(path: str) -> str:
    """A normalized TES path without its leading '/', quoted."""
    return quote(path[1:])


def _in_root(path: str) -> str:
    return '"$hpcfed_root"' + quote(path)


_PRELUDE = r"""# A GA4GH TES task, run by hpcfed (gateway/tes/batch.py).
hpcfed_job=$PWD
hpcfed_root=$hpcfed_job/tes/root
hpcfed_logs=$hpcfed_job/tes/log
hpcfed_outs=$hpcfed_job/tes/out
hpcfed_manifest=$hpcfed_job/tes/outputs.tsv
rm -rf -- "$hpcfed_logs" "$hpcfed_outs" "$hpcfed_manifest"
if ! mkdir -p -- "$hpcfed_root" "$hpcfed_logs" "$hpcfed_outs"; then
  echo "hpcfed: cannot create the task's directories in $hpcfed_job" >&2
  exit 70
fi
hpcfed_system() { printf '%s\n' "$*" >>"$hpcfed_logs/system.log"; }
hpcfed_fail() { hpcfed_system "$1"; exit 70; }
hpcfed_now() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }
# The matches (NUL-terminated, relative to $1) of the glob pattern $2.
hpcfed_glob() (
  cd -- "$1" || exit
  shopt -s nullglob
  IFS=
  for hpcfed_m in $2; do printf '%s\0' "$hpcfed_m"; done
)
# Manifest lines for output $1: the files at $3 (relative to the job dir), TES path $2.
hpcfed_list() {
  local hpcfed_size hpcfed_p hpcfed_rest
  while IFS=$'\t' read -r -d '' hpcfed_size hpcfed_p; do
    hpcfed_rest=${hpcfed_p#"$3"}
    case $2$hpcfed_rest in
      *$'\t'* | *$'\n'*)
        hpcfed_system "outputs[$1]: a file whose name holds a tab or a newline is left out"
        continue ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$1" "$2$hpcfed_rest" "$hpcfed_p" "$hpcfed_size" \
      >>"$hpcfed_manifest"
  done < <(cd -- "$hpcfed_job" && find -H "$3" -type f -printf '%s\t%p\0')
}
# Output $1 of kind $2 (file, directory, glob) at $3 (relative to the root); $4: the
# path prefix (relative) a glob's matches lose under tes/out/$1.
hpcfed_output() {
  local hpcfed_m hpcfed_rest hpcfed_to
  case $2 in
    file)
      if [ -f "$hpcfed_root/$3" ]; then hpcfed_list "$1" "/$3" "tes/root/$3"
      elif [ -e "$hpcfed_root/$3" ]; then hpcfed_system "outputs[$1]: /$3 is not a file"
      fi ;;
    directory)
      if [ -d "$hpcfed_root/$3" ]; then hpcfed_list "$1" "/$3" "tes/root/$3"
      elif [ -e "$hpcfed_root/$3" ]; then hpcfed_system "outputs[$1]: /$3 is not a directory"
      fi ;;
    glob)
      while IFS= read -r -d '' hpcfed_m; do
        hpcfed_rest=${hpcfed_m#"$4"}
        hpcfed_rest=${hpcfed_rest#/}
        hpcfed_to=tes/out/$1${hpcfed_rest:+/$hpcfed_rest}
        if ! mkdir -p -- "$(dirname -- "$hpcfed_job/$hpcfed_to")" || ! {
          cp -RHTl -- "$hpcfed_root/$hpcfed_m" "$hpcfed_job/$hpcfed_to" 2>/dev/null ||
            cp -RHT -- "$hpcfed_root/$hpcfed_m" "$hpcfed_job/$hpcfed_to"
        }; then
          hpcfed_system "outputs[$1]: cannot copy /$hpcfed_m"
          continue
        fi
        hpcfed_list "$1" "/$hpcfed_m" "$hpcfed_to"
      done < <(hpcfed_glob "$hpcfed_root" "$3") ;;
  esac
}"""

_SANDBOX_NONE = r"""# sandbox none: the host's /$1 back to the root.
hpcfed_back() {
  [ -e "/$1" ] || return 0
  if ! { mkdir -p -- "$(dirname -- "$hpcfed_root/$1")" && cp -RHT -- "/$1" "$hpcfed_root/$1"; }
  then
    hpcfed_system "cannot copy the output /$1 from the host"
  fi
}
hpcfed_back_glob() {
  local hpcfed_m
  while IFS= read -r -d '' hpcfed_m; do hpcfed_back "$hpcfed_m"; done < <(hpcfed_glob / "$1")
}"""


def task_script(run: TaskRun) -> str:
    """The bash text of the task's user script (no shebang, no scheduler directives);
    ValueError naming the field for a path or word that cannot be used."""
    plan = _plan(run)
    none = run.runtime == "none" and run.sandbox == "none"
    lines = [_PRELUDE]
    if none:
        lines.append(_SANDBOX_NONE)
    lines += _finish(plan, none)
    lines += _runtime_check(run)
    lines += _prepare(plan, none)
    if run.runtime == "none" and run.sandbox == "bubblewrap":
        lines += _bubblewrap_root(plan)
    elif run.runtime != "none":
        lines += _container_binds(plan)
    for executor in plan.executors:
        lines += _executor(plan, executor, none)
    lines.append("hpcfed_finish 0")
    return "\n".join(lines) + "\n"


def _runtime_check(run: TaskRun) -> list[str]:
    """Lines that make a center without the declared runtime (or a bubblewrap that
    cannot make its namespaces there) a system failure, not an executor's."""
    if run.runtime == "none" and run.sandbox == "none":
        return []
    name = run.command or ("bwrap" if run.runtime == "none" else run.runtime)
    missing = quote(f"{name} is not installed at this center (tes.runtime/tes.sandbox)")
    lines = [
        "# The runtime the center declares.",
        f"command -v {quote(name)} >/dev/null 2>&1 || hpcfed_fail {missing}",
    ]
    if run.runtime == "none":
        refused = quote(
            f"{name} cannot make a sandbox at this center (unprivileged user namespaces "
            "off, and bwrap not setuid)"
        )
        lines.append(f"{quote(name)} --dev-bind / / true >/dev/null 2>&1 || hpcfed_fail {refused}")
    return lines


def _finish(plan: _Plan, none: bool) -> list[str]:
    lines = ["# The outputs (also after a failed executor), then the exit.", "hpcfed_finish() {"]
    if none:
        for output in plan.outputs:
            back = "hpcfed_back_glob" if output.glob else "hpcfed_back"
            lines.append(f"  {back} {_rel(output.path)}")
    lines.append('  : >"$hpcfed_manifest"')
    for output in plan.outputs:
        kind = "glob" if output.glob else "directory" if output.directory else "file"
        prefix = _rel(output.prefix) if output.prefix else "''"
        lines.append(f"  hpcfed_output {output.index} {kind} {_rel(output.path)} {prefix}")
    lines += ['  exit "$1"', "}"]
    return lines


def _prepare(plan: _Plan, none: bool) -> list[str]:
    lines = ["# The task's directories and inputs."]
    directories = plan.directories()
    if directories:
        made = " ".join(_in_root(path) for path in directories)
        lines.append(f"mkdir -p -- {made} || hpcfed_fail 'cannot create the task directories'")
    for path, text in plan.contents:
        failed = quote(f"cannot write the input {path}")
        lines.append(f"printf '%s' {quote(text)} >{_in_root(path)} || hpcfed_fail {failed}")
    for host, path in plan.host_inputs:
        missing = quote(f"the input {path}: {host} does not exist at the center")
        failed = quote(f"the input {path}: cannot copy {host}")
        lines += [
            f"if [ -e {quote(host)} ]; then",
            f"  cp -RHT -- {quote(host)} {_in_root(path)} || hpcfed_fail {failed}",
            "else",
            f"  hpcfed_fail {missing}",
            "fi",
        ]
    if none:
        lines.append("# sandbox none: the TES paths are the host's.")
        if directories:
            made = " ".join(quote(path) for path in directories)
            failed = quote("cannot create the task directories on the host")
            lines.append(f"mkdir -p -- {made} || hpcfed_fail {failed}")
        inputs = [path for path, _ in plan.contents] + [path for _, path in plan.host_inputs]
        for path in [*inputs, *plan.staged]:
            failed = quote(f"the input {path}: cannot copy it to the host")
            lines.append(f"cp -RHT -- {_in_root(path)} {quote(path)} || hpcfed_fail {failed}")
    return lines


def _bubblewrap_root(plan: _Plan) -> list[str]:
    tops = plan.tops()
    skipped = "|".join(["dev", "proc", *(quote(top) for top in tops)])
    lines = [
        "# The executors' root under bubblewrap: the host's top-level entries, a fresh /dev",
        "# and /proc, and the task's own directories over the top-level ones it uses.",
        "hpcfed_sandbox=()",
        "for hpcfed_e in /* /.[!.]* /..?*; do",
        '  [ -e "$hpcfed_e" ] || [ -L "$hpcfed_e" ] || continue',
        "  case ${hpcfed_e#/} in",
        f"    {skipped}) continue ;;",
        "  esac",
        '  if [ -L "$hpcfed_e" ]; then',
        '    hpcfed_sandbox+=(--symlink "$(readlink -- "$hpcfed_e")" "$hpcfed_e")',
        "  else",
        '    hpcfed_sandbox+=(--bind "$hpcfed_e" "$hpcfed_e")',
        "  fi",
        "done",
        "hpcfed_sandbox+=(--dev /dev --proc /proc)",
        "for hpcfed_e in /dev/nvidia* /dev/dri /dev/kfd /dev/infiniband; do",
        '  if [ -e "$hpcfed_e" ]; then hpcfed_sandbox+=(--dev-bind "$hpcfed_e" "$hpcfed_e"); fi',
        "done",
    ]
    for top in tops:
        source, target = _in_root("/" + top), quote("/" + top)
        lines.append(f"if [ -e {source} ]; then hpcfed_sandbox+=(--bind {source} {target}); fi")
    return lines


def _container_binds(plan: _Plan) -> list[str]:
    flag = "--bind" if plan.run.runtime == "apptainer" else "-v"
    lines = ["# The task's own top-level directories in the container.", "hpcfed_binds=()"]
    for top in plan.tops():
        source = _in_root("/" + top)
        spec = '"$hpcfed_root"' + quote(f"/{top}:/{top}")
        lines.append(f"if [ -e {source} ]; then hpcfed_binds+=({flag} {spec}); fi")
    return lines


def apptainer_image(image: str) -> str:
    """The image as apptainer names it: `docker://` unless a path or already a URL."""
    return image if image.startswith("/") or "://" in image else f"docker://{image}"


def _command(plan: _Plan, executor: _Executor, none: bool) -> str:
    run = plan.run
    argv = " ".join(quote(word) for word in executor.run.argv)
    image = executor.run.environment.image
    env = executor.run.env
    if run.runtime == "apptainer":
        words = [quote(run.command or "apptainer"), "exec", "--containall", '"${hpcfed_binds[@]}"']
        if executor.workdir is not None:
            words += ["--pwd", quote(executor.workdir)]
        words += [f"--env {quote(f'{k}={v}')}" for k, v in env if "," not in v]
        words += [quote(apptainer_image(image)), argv]
        commas = [quote(f"APPTAINERENV_{k}={v}") for k, v in env if "," in v]
        return " ".join(["env", "--", *commas, *words] if commas else words)
    if run.runtime == "podman":
        words = [quote(run.command or "podman"), "run", "--rm", "-i", "--network=host"]
        words.append('"${hpcfed_binds[@]}"')
        if executor.workdir is not None:
            words += ["-w", quote(executor.workdir)]
        words += [f"-e {quote(f'{k}={v}')}" for k, v in env]
        return " ".join([*words, quote(image), argv])
    if none:
        pairs = " ".join(quote(f"{k}={v}") for k, v in env)
        return f"env -- {pairs} {argv}" if pairs else f"env -- {argv}"
    words = [quote(run.command or "bwrap"), "--die-with-parent", '"${hpcfed_sandbox[@]}"']
    words += ["--chdir", quote(executor.workdir or SANDBOX_WORKDIR)]
    words += [f"--setenv {quote(k)} {quote(v)}" for k, v in env]
    return " ".join([*words, "--", argv])


def _executor(plan: _Plan, executor: _Executor, none: bool) -> list[str]:
    index = executor.index
    log = f'"$hpcfed_logs"/exec-{index}.log'

    def where(path: str) -> str:
        return quote(path) if none else _in_root(path)

    stdin = where(executor.stdin) if executor.stdin else "/dev/null"
    stdout = where(executor.stdout) if executor.stdout else f'"$hpcfed_logs"/exec-{index}.out'
    stderr = where(executor.stderr) if executor.stderr else f'"$hpcfed_logs"/exec-{index}.err'
    setup = list(executor.run.environment.setup)
    if none and plan.run.runtime == "none":
        setup.append(
            f"cd -- {quote(executor.workdir)}" if executor.workdir else 'cd -- "$hpcfed_root"'
        )
    lines = [f"# executors[{index}]", "("]
    if setup:
        lines += ["  set -e", "  {", *setup, '  } >>"$hpcfed_logs/system.log" 2>&1', "  set +e"]
    lines += [
        f"  printf 'start %s\\n' \"$(hpcfed_now)\" >{log}",
        f"  {_command(plan, executor, none)} <{stdin} >{stdout} 2>{stderr}",
        ")",
        "hpcfed_rc=$?",
        f"if [ -s {log} ]; then",
        f'  printf \'exit %s\\nend %s\\n\' "$hpcfed_rc" "$(hpcfed_now)" >>{log}',
    ]
    if not executor.run.ignore_error:
        lines += [
            '  if [ "$hpcfed_rc" != 0 ]; then',
            # (the line's fixed text holds nothing double quotes would expand)
            '    hpcfed_system "' + stop_line(index, "$hpcfed_rc") + '"',
            '    hpcfed_finish "$hpcfed_rc"',
            "  fi",
        ]
    lines += [
        "else",
        f'  hpcfed_system "executors[{index}]: the environment setup failed'
        ' (exit status $hpcfed_rc)"',
        "  hpcfed_finish 70",
        "fi",
    ]
    return lines


def _tail(data: bytes | None, tail: int) -> str:
    if not data:
        return ""
    if len(data) > tail:
        data = data[-tail:]
        start = 0
        while start < min(len(data), 4) and data[start] & 0xC0 == 0x80:
            start += 1
        data = data[start:]
    return data.decode("utf-8", errors="replace")


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def parse_logs(files: dict[str, bytes | None], tail: int = 64 << 10) -> TaskLogs:
    """The task's logs from the files of `log_files()` (None: missing); stdout, stderr and
    the system log keep their last `tail` bytes."""
    count = 0
    for name in files:
        found = re.fullmatch(re.escape(LOGS) + r"/exec-(\d+)\.log", name)
        if found:
            count = max(count, int(found.group(1)) + 1)
    executors: list[ExecutorLog] = []
    for i in range(count):
        log = files.get(f"{LOGS}/exec-{i}.log")
        if not log:
            break
        fields: dict[str, str] = {}
        for line in log.decode("utf-8", errors="replace").splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value
        if "start" not in fields:
            break
        try:
            code: int | None = int(fields["exit"])
        except (KeyError, ValueError):
            code = None
        executors.append(
            ExecutorLog(
                exit_code=code,
                start_time=_time(fields["start"]),
                end_time=_time(fields["end"]) if "end" in fields else None,
                stdout=_tail(files.get(f"{LOGS}/exec-{i}.out"), tail),
                stderr=_tail(files.get(f"{LOGS}/exec-{i}.err"), tail),
            )
        )
    system = tuple(line for line in _tail(files.get(_SYSTEM_LOG), tail).splitlines() if line)
    outputs: list[OutputFile] = []
    for line in (files.get(MANIFEST) or b"").decode("utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) != 4:
            continue
        try:
            outputs.append(OutputFile(int(parts[0]), parts[1], parts[2], int(parts[3])))
        except ValueError:
            continue
    return TaskLogs(tuple(executors), tuple(outputs), system)
