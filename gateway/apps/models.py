"""An application definition (`configs/apps/<name>.yaml`, or put by an admin through
the API): its versions, typed parameters, the run template that turns parameters into
argument vectors and files, declared outputs, resource hints and limits, and the
canary that checks a center's binding of it. And what a job spec asks for (`app:`).

A parameter's value never becomes shell text: a `{{name}}` word of an argument vector
is one argument, quoted when the script is written; a file template may name only
parameters whose values cannot carry text (int, float, bool, choice).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from gateway.fields import _DURATION_SCHEMA, SAFE_NAME_PATTERN, _Strict, _Verbatim
from gateway.units import Seconds

#: A duration: seconds, or text such as "90m" (the schema says both).
Duration = Annotated[Seconds, WithJsonSchema({"anyOf": _DURATION_SCHEMA})]

#: An application's name: it appears in URLs, records and center files.
APP_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
#: A parameter's name, as `{name}` in templates and `app.parameters.<name>` in errors.
PARAM_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
#: A file the template writes or a check reads: relative, each name starting with a
#: letter, digit or `_` (so no `.`, `..` or hidden file), no empty name.
RELATIVE_FILE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._+-]*(/[A-Za-z0-9_][A-Za-z0-9._+-]*)*$"
#: A program: a name found on PATH, or an absolute path.
EXECUTABLE_PATTERN = r"^/?[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$"
#: `{{name}}` in a template (`${name}` of a shell or a LAMMPS input stays as it is).
PLACEHOLDER = re.compile(r"\{\{\s*([a-z][a-z0-9_]{0,63})\s*\}\}")
#: The one placeholder that is no parameter: the binding's program (or the definition's).
EXECUTABLE = "executable"

ParamType = Literal["int", "float", "bool", "string", "choice", "input_file", "output_file"]
#: The types whose values cannot carry text, which file templates may name.
NUMERIC_TYPES = frozenset({"int", "float", "bool", "choice"})
Scalar = int | float | bool | str


class Parameter(_Strict):
    """One typed parameter. `input_file` and `output_file` are paths relative to the
    job's working directory (an input is staged there with the spec's `inputs`)."""

    type: ParamType
    description: str = Field("", max_length=2000)
    required: bool = False
    default: Scalar | None = None
    min: float | None = Field(None, description="int and float: the smallest value allowed")
    max: float | None = Field(None, description="int and float: the largest value allowed")
    pattern: str | None = Field(
        None, max_length=1000, description="string: a regular expression the whole value matches"
    )
    max_length: int = Field(4096, ge=1, le=65536, description="string: the most characters")
    choices: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=256, description="choice: the values allowed"
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Parameter:
        numeric = self.type in ("int", "float")
        if not numeric and (self.min is not None or self.max is not None):
            raise ValueError(f"min and max apply to int and float, not to {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g})")
        if self.pattern is not None and self.type != "string":
            raise ValueError(f"pattern applies to string, not to {self.type}")
        if (self.type == "choice") != bool(self.choices):
            raise ValueError("choices go with type choice, and it needs them")
        if self.required and self.default is not None:
            raise ValueError("a required parameter has no default")
        if self.default is not None:
            problem = parameter_problem(self, self.default)
            if problem:
                raise ValueError(f"default: {problem}")
        return self


def parameter_problem(param: Parameter, value: object) -> str | None:
    """Why `value` is not a valid value of `param`; None when it is."""
    kind = param.type
    if kind == "bool":
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}"
        if kind == "int" and not (isinstance(value, int) or value.is_integer()):
            return f"must be an integer, got {value!r}"
        if value != value or value in (float("inf"), float("-inf")):
            return "must be a finite number"
        if param.min is not None and value < param.min:
            return f"must be >= {param.min:g}"
        if param.max is not None and value > param.max:
            return f"must be <= {param.max:g}"
        return None
    if not isinstance(value, str):
        return f"must be a string, got {value!r}"
    if kind == "choice":
        return None if value in param.choices else f"must be one of {', '.join(param.choices)}"
    if "\0" in value:
        return "must not contain a NUL byte"
    if kind in ("input_file", "output_file"):
        if not re.match(RELATIVE_FILE_PATTERN, value) or len(value) > 1024:
            return (
                "must be a path relative to the job's directory "
                "(letters, digits, '._+-', '/' between names, no '..')"
            )
        return None
    if len(value) > param.max_length:
        return f"must be at most {param.max_length} characters"
    if param.pattern is not None and not re.fullmatch(param.pattern, value):
        return f"must match {param.pattern}"
    return None


def placeholders(template: str) -> list[str]:
    """The `{{name}}`s of a template."""
    return PLACEHOLDER.findall(template)


def fill(template: str, values: dict[str, str]) -> str:
    """The template with each `{{name}}` replaced by its value."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


ArgWord = Annotated[str, Field(min_length=1, max_length=4096)]


class RunTemplate(_Strict):
    """How a run is made: files written into the job's directory, then commands run in
    order (a failing one ends the job with its exit status)."""

    executable: str = Field(
        pattern=EXECUTABLE_PATTERN,
        max_length=1024,
        description="the program `{{executable}}` names, unless a center's binding names another",
    )
    files: dict[Annotated[str, Field(pattern=RELATIVE_FILE_PATTERN)], str] = Field(
        default_factory=dict,
        max_length=32,
        description="file name -> its text; `{{name}}` may name int, float, bool and choice "
        "parameters only",
    )
    commands: list[Annotated[list[ArgWord], Field(min_length=1, max_length=1024)]] = Field(
        min_length=1,
        max_length=32,
        description="argument vectors; a word `{{name}}` (or with text around it) takes the "
        "parameter's value as part of that one argument",
    )


class NumberCheck(_Strict):
    regex: str = Field(description="a regular expression whose first group is the number")
    value: float
    tolerance: float = Field(ge=0)


#: Exactly one of `regex` and `number` (what `OutputCheck._one` holds it to).
_REGEX_OR_NUMBER: dict[str, Any] = {
    "oneOf": [
        {
            "required": ["regex"],
            "properties": {"regex": {"type": "string"}, "number": {"type": "null"}},
        },
        {
            "required": ["number"],
            "properties": {"number": {"type": "object"}, "regex": {"type": "null"}},
        },
    ]
}


class OutputCheck(_Strict):
    """One check on a canary's output: a line matching `regex`, or the number
    `number.regex` captures within `tolerance` of `value`."""

    model_config = ConfigDict(json_schema_extra=_REGEX_OR_NUMBER)

    file: str = Field(
        "stdout", description="stdout, stderr, or a file of the job's directory", max_length=1024
    )
    regex: str | None = Field(None, max_length=2000)
    number: NumberCheck | None = None

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        if value not in ("stdout", "stderr") and not re.match(RELATIVE_FILE_PATTERN, value):
            raise ValueError("must be stdout, stderr or a path relative to the job's directory")
        return value

    @model_validator(mode="after")
    def _one(self) -> OutputCheck:
        if (self.regex is None) == (self.number is None):
            raise ValueError("give exactly one of 'regex' and 'number'")
        for text in (self.regex, self.number.regex if self.number else None):
            if text is not None:
                try:
                    compiled = re.compile(text, re.MULTILINE)
                except re.error as exc:
                    raise ValueError(f"not a regular expression: {exc}") from None
                if self.number is not None and compiled.groups < 1:
                    raise ValueError("number.regex needs a group around the number")
        return self


class Canary(_Strict):
    """A small run that shows a binding works: its parameters, and checks on its output."""

    parameters: dict[str, Scalar] = Field(default_factory=dict)
    timeout: Duration = Field(300.0, le=3600, description="how long the canary job may take")
    checks: list[OutputCheck] = Field(min_length=1, max_length=32)


class ResourceHints(_Strict):
    """What a job of this application gets unless its spec says otherwise."""

    nodes: int | None = Field(None, ge=1, le=100_000)
    tasks_per_node: int | None = Field(None, ge=1, le=100_000)
    cpus_per_task: int | None = Field(None, ge=1, le=100_000)
    walltime: Duration | None = None


class Limits(_Strict):
    """What a job of this application may not exceed."""

    max_nodes: int | None = Field(None, ge=1)
    max_tasks_per_node: int | None = Field(None, ge=1)
    max_cpus_per_task: int | None = Field(None, ge=1)
    max_walltime: Duration | None = None


class AppDefinition(_Strict):
    """A federation-wide application."""

    name: str = Field(pattern=APP_NAME_PATTERN)
    title: str = Field("", max_length=200)
    description: str = Field("", max_length=4000)
    versions: list[Annotated[str, Field(pattern=SAFE_NAME_PATTERN)]] = Field(
        min_length=1, max_length=64, description="newest first; a spec without one gets the first"
    )
    parameters: dict[Annotated[str, Field(pattern=PARAM_NAME_PATTERN)], Parameter] = Field(
        default_factory=dict, max_length=128
    )
    run: RunTemplate
    outputs: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default_factory=list,
        max_length=64,
        description="files of the job's directory a run leaves; `{{name}}` may name parameters",
    )
    resources: ResourceHints = Field(default_factory=ResourceHints)
    limits: Limits = Field(default_factory=Limits)
    canary: Canary

    @field_validator("versions")
    @classmethod
    def _distinct(cls, versions: list[str]) -> list[str]:
        if len(set(versions)) != len(versions):
            raise ValueError("versions repeat")
        return versions

    @model_validator(mode="after")
    def _templates(self) -> AppDefinition:
        known = set(self.parameters)
        if EXECUTABLE in known:
            raise ValueError(f"parameters: {EXECUTABLE!r} is the program's placeholder")
        for i, argv in enumerate(self.run.commands):
            for j, word in enumerate(argv):
                for name in placeholders(word):
                    if name != EXECUTABLE and name not in known:
                        raise ValueError(f"run.commands[{i}][{j}]: {{{{{name}}}}} is no parameter")
        for file, text in self.run.files.items():
            for name in placeholders(text):
                param = self.parameters.get(name)
                if param is None:
                    raise ValueError(f"run.files.{file}: {{{{{name}}}}} is no parameter")
                if param.default is None and not param.required:
                    raise ValueError(
                        f"run.files.{file}: {{{{{name}}}}} needs a default or to be required"
                    )
                if param.type not in NUMERIC_TYPES:
                    raise ValueError(
                        f"run.files.{file}: {{{{{name}}}}} is a {param.type}; a file may name only "
                        "int, float, bool and choice parameters"
                    )
        for i, output in enumerate(self.outputs):
            for name in placeholders(output):
                if name not in known:
                    raise ValueError(f"outputs[{i}]: {{{{{name}}}}} is no parameter")
        for name, value in self.canary.parameters.items():
            param = self.parameters.get(name)
            if param is None:
                raise ValueError(f"canary.parameters.{name}: no such parameter")
            problem = parameter_problem(param, value)
            if problem:
                raise ValueError(f"canary.parameters.{name}: {problem}")
        return self

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class AppRequest(_Verbatim):
    """`app:` of a job spec: which application, which version (the newest one the
    chosen center offers, when not given), and its parameters."""

    name: str = Field(pattern=APP_NAME_PATTERN)
    version: str | None = Field(None, pattern=SAFE_NAME_PATTERN)
    parameters: dict[
        Annotated[str, Field(max_length=64)],
        Annotated[Scalar, Field(union_mode="left_to_right")],
    ] = Field(default_factory=dict, max_length=128)
