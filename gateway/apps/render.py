"""From an application request to the script a center runs: the parameters checked
against the definition (errors name `app.parameters.<name>`), the center's binding
found, its environment (modules, PATH, variables, the admin's setup lines) and the
definition's files and commands written out.

No parameter value becomes shell text: an argument word is quoted whole, and a file's
text goes through a quoted here-document, into which only values that cannot carry
text (numbers, booleans, choices) are filled.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adapters.transport.framing import quote
from gateway.apps.models import (
    EXECUTABLE,
    AppDefinition,
    Parameter,
    Scalar,
    fill,
    parameter_problem,
    placeholders,
)
from gateway.centers.config import AppBinding, CenterConfig, EnvironmentSetup
from gateway.errors import Unprocessable

#: Where a batch job finds the `module` command when its shell has none yet: Lmod's
#: and Environment Modules' usual init files, the first that exists.
MODULE_INITS = (
    "/usr/share/lmod/lmod/init/bash",
    "/etc/profile.d/lmod.sh",
    "/usr/share/Modules/init/bash",
    "/etc/profile.d/modules.sh",
)


def _field(name: str) -> str:
    return f"app.parameters.{name}"


def check_parameters(definition: AppDefinition, given: Mapping[str, Scalar]) -> dict[str, Scalar]:
    """Every parameter's value (given, else its default), each checked against its
    definition; an Unprocessable naming `app.parameters.<name>` for the first that
    is unknown, missing or out of bounds."""
    for name in given:
        if name not in definition.parameters:
            known = ", ".join(definition.parameters) or "none"
            raise Unprocessable(
                "invalid_request",
                f"{_field(name)}: {definition.name} has no such parameter (it has: {known})",
                _field(name),
            )
    values: dict[str, Scalar] = {}
    for name, param in definition.parameters.items():
        if name in given:
            value = given[name]
        elif param.default is not None:
            value = param.default
        elif param.required:
            raise Unprocessable("invalid_request", f"{_field(name)}: required", _field(name))
        else:
            continue
        problem = parameter_problem(param, value)
        if problem:
            raise Unprocessable("invalid_request", f"{_field(name)}: {problem}", _field(name))
        values[name] = normalized(param, value)
    return values


def normalized(param: Parameter, value: Scalar) -> Scalar:
    if param.type == "int" and isinstance(value, float):
        return int(value)
    if param.type == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def text_of(value: Scalar) -> str:
    """A value as a program reads it: 200, 0.5, true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def check_version(definition: AppDefinition, version: str | None) -> str | None:
    if version is not None and version not in definition.versions:
        raise Unprocessable(
            "invalid_request",
            f"app.version: {definition.name} has no version {version} "
            f"(it has: {', '.join(definition.versions)})",
            "app.version",
        )
    return version


def find_binding(
    center: CenterConfig, app: str, version: str | None = None, partition: str | None = None
) -> AppBinding | None:
    """The center's binding of `app` (of `version`, else the first listed), offered in
    `partition` when one is named."""
    for binding in center.applications.bindings:
        if binding.app != app or (version is not None and binding.version != version):
            continue
        if partition is not None and binding.partitions and partition not in binding.partitions:
            continue
        return binding
    return None


def setup_lines(center: CenterConfig, binding: EnvironmentSetup) -> list[str]:
    """The shell lines that give a batch job the binding's environment."""
    return _module_init(center, binding) + _environment(center, binding)


def _module_init(center: CenterConfig, binding: EnvironmentSetup) -> list[str]:
    """Lines that define `module` where the batch job's shell has none yet."""
    modules = center.applications.modules
    if not (binding.modules or modules.paths):
        return []
    inits = (modules.init,) if modules.init else MODULE_INITS
    found = " ".join(quote(path) for path in inits)
    return [
        "if ! type module >/dev/null 2>&1; then",
        f"  for hpcfed_init in {found}; do",
        '    if [ -r "$hpcfed_init" ]; then . "$hpcfed_init"; break; fi',
        "  done",
        "fi",
    ]


def _environment(center: CenterConfig, binding: EnvironmentSetup) -> list[str]:
    lines: list[str] = []
    if binding.modules or center.applications.modules.paths:
        lines += [f"module use {quote(path)}" for path in center.applications.modules.paths]
        lines += [f"module load {quote(name)}" for name in binding.modules]
    if binding.path:
        joined = ":".join(binding.path)
        lines.append(f'export PATH={quote(joined)}"${{PATH:+:$PATH}}"')
    lines += [f"export {name}={quote(value)}" for name, value in binding.environment.items()]
    lines += list(binding.setup)
    return lines


def _here_document(name: str, text: str) -> list[str]:
    """Lines that write `text` to `name` verbatim: a here-document whose quoted
    delimiter no line of the text is."""
    lines = text.split("\n")
    delimiter = "HPCFED_FILE_END"
    while delimiter in lines:
        delimiter = f"HPCFED_FILE_END_{secrets.token_hex(4)}"
    body = text if text.endswith("\n") or not text else text + "\n"
    return [f"cat > {quote(name)} <<'{delimiter}'", body + delimiter]


def file_marker(name: str) -> str:
    """The line before a canary's copy of the file `name` on its stdout."""
    return f"==== hpcfed canary file: {name} ===="


@dataclass(frozen=True)
class RenderedRun:
    """What a job of an application runs at one center."""

    script: str
    executable: str
    outputs: list[str]


def render(
    definition: AppDefinition,
    version: str,
    center: CenterConfig,
    binding: AppBinding,
    values: Mapping[str, Scalar],
    show: Sequence[str] = (),
) -> RenderedRun:
    """The script for `values` (from `check_parameters`) under `binding`. With `show`
    (a canary's), the run is followed by each of those files on stdout, between
    `file_marker` lines, and the script ends with the run's exit status."""
    executable = binding.executable or definition.run.executable
    texts = {name: text_of(value) for name, value in values.items()}
    words = {**texts, EXECUTABLE: executable}
    lines = [
        "#!/bin/bash",
        f"# {definition.name} {version} at {center.id}, run by hpcfed",
        f"# the center's environment for {definition.name} {version}",
        *_module_init(center, binding),
        "set -e",  # a module that does not load, a failing setup line: the job fails
        *_environment(center, binding),
    ]
    if definition.run.files:
        lines.append("# the application's files")
    for name, template in definition.run.files.items():
        lines += _here_document(name, fill(template, texts))
    lines.append("# the run")
    commands = []
    for argv in definition.run.commands:
        # A word naming an optional parameter that has no value is left out.
        kept = [word for word in argv if all(name in words for name in placeholders(word))]
        commands.append(" ".join(quote(fill(word, words)) for word in kept))
    if show:
        # `a && b || s=$?`: the status of the first command that fails.
        lines += ["hpcfed_status=0", " && ".join(commands) + " || hpcfed_status=$?"]
        for name in show:
            lines += [f"echo {quote(file_marker(name))}", f"cat -- {quote(name)} 2>&1 || true"]
        lines.append('exit "$hpcfed_status"')
    else:
        # The last command is the job's own process, so its exit status is the job's.
        lines += [*commands[:-1], f"exec -- {commands[-1]}"]
    outputs = [
        fill(output, texts)
        for output in definition.outputs
        if all(name in texts for name in placeholders(output))
    ]
    return RenderedRun("\n".join(lines) + "\n", executable, outputs)
