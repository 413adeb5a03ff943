"""A center's configuration file (`configs/centers/<id>.yaml`): how it is reached
(SSH, identity), its type and that type's own section, files, hardware, price and
energy. The type's section is validated by the model its registry entry names.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Annotated, Any, Literal, Union, cast

from pydantic import (
    BaseModel,
    Field,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from adapters.registry import CenterType, UnknownCenterType, center_types
from adapters.registry import center_type as registered_type
from gateway.fields import (
    CENTER_ID_PATTERN,
    LOGIN_PATTERN,
    USER_PATTERN,
    _Strict,
)
from gateway.units import MemoryMiB, Seconds


class SSHConfig(_Strict):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(22, ge=1, le=65535)
    login: str | None = Field(
        None,
        pattern=LOGIN_PATTERN,
        description="the center's service login (connection checks); its key is in the vault",
    )
    host_keys: list[str] = Field(
        min_length=1,
        description="pinned host public keys, 'type base64' as in a .pub or known_hosts line",
    )
    connect_timeout: Seconds = 10.0
    command_timeout: Seconds = 60.0
    keepalive_interval: Seconds = 15.0
    max_sessions: int = Field(8, ge=1, le=64, description="concurrent channels per connection")

    @field_validator("host_keys")
    @classmethod
    def _key_shape(cls, keys: list[str]) -> list[str]:
        for i, key in enumerate(keys):
            parts = key.split()
            if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
                raise ValueError(f"entry {i} must look like 'ssh-ed25519 AAAA...', got {key!r}")
        return keys


class Identity(_Strict):
    """Who a federation user is at one center. The login's SSH key is kept in the
    vault under ssh/<center>/<login> (`hpcfed vault add-key`)."""

    login: str = Field(pattern=LOGIN_PATTERN)


class FilesConfig(_Strict):
    """The files a login may reach at a center through the gateway."""

    roots: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default_factory=lambda: ["{home}"],
        min_length=1,
        description="absolute directories, with {home} (the login's home) and {login}; "
        "relative paths in requests are under the first",
    )
    bulk_threshold: MemoryMiB = Field(
        8, description="copies this large go through OpenSSH's ssh client, e.g. '8MiB'"
    )
    openssh: bool = Field(True, description="use OpenSSH for bulk copies where it is installed")

    @field_validator("roots")
    @classmethod
    def _absolute(cls, roots: list[str]) -> list[str]:
        for i, root in enumerate(roots):
            if not root.startswith(("/", "{home}")):
                raise ValueError(f"root {i} ({root!r}) must be absolute or start with {{home}}")
            if "\0" in root or ".." in root.split("/"):
                raise ValueError(f"root {i} ({root!r}) may not hold '..' or NUL")
        return roots


class CpuHardware(_Strict):
    """Figures of a partition's CPU cores, for its theoretical peak."""

    model: str = Field("", max_length=200)
    clock_ghz: float = Field(gt=0, le=20, description="sustained clock of a core")
    flops_per_cycle: float = Field(
        gt=0, le=1024, description="double-precision FLOP per core per cycle (e.g. 16 for AVX2 FMA)"
    )


class GpuHardware(_Strict):
    """Figures of one GPU model, for the theoretical peak."""

    peak_tflops: float = Field(gt=0, le=10_000, description="double-precision peak of one GPU")
    memory: MemoryMiB | None = Field(None, description="memory of one GPU, e.g. '40GiB'")


class HardwareConfig(_Strict):
    """What the scheduler cannot tell: the speed of the hardware it runs."""

    cpu: CpuHardware | None = Field(None, description="every partition's cores, unless named")
    partitions: dict[str, CpuHardware] = Field(
        default_factory=dict, description="partition (queue) name -> its cores' figures"
    )
    gpus: dict[str, GpuHardware] = Field(
        default_factory=dict, description="GPU model as the scheduler names it -> its figures"
    )

    def cpu_of(self, partition: str) -> CpuHardware | None:
        return self.partitions.get(partition) or self.cpu


#: A module as `module load` names it (Lmod: `name/version`).
MODULE_PATTERN = r"^[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
AbsolutePath = Annotated[str, Field(pattern=r"^/[^\x00\n]*$", max_length=4096)]


class ModulesConfig(_Strict):
    """How this center's job scripts reach its environment modules (Lmod or Tcl modules)."""

    init: AbsolutePath | None = Field(
        None,
        description="the shell init file sourced when `module` is not defined in a batch job "
        "(default: the first of Lmod's and Environment Modules' usual places that exists)",
    )
    paths: list[AbsolutePath] = Field(
        default_factory=list, max_length=64, description="module trees to `module use`, in order"
    )


class EnvironmentSetup(_Strict):
    """What gives a batch job a piece of software: modules, PATH, variables and the admin's
    own setup lines (which go into job scripts as they are)."""

    modules: list[Annotated[str, Field(pattern=MODULE_PATTERN, max_length=200)]] = Field(
        default_factory=list, max_length=32, description="`module load` each, in order"
    )
    path: list[AbsolutePath] = Field(
        default_factory=list, max_length=32, description="directories put first on PATH"
    )
    environment: dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], str] = Field(
        default_factory=dict, max_length=128
    )
    setup: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=64, description="shell lines run before the software"
    )

    @field_validator("setup", "environment")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        texts = value.values() if isinstance(value, dict) else value
        if any("\0" in text for text in texts):
            raise ValueError("must not contain a NUL byte")
        return value


class AppBinding(EnvironmentSetup):
    """How this center offers one version of an application of the catalog. Written by
    the center's admin: `setup` lines go into job scripts as they are."""

    app: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    executable: str | None = Field(
        None,
        pattern=r"^/?[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$",
        max_length=1024,
        description="the program to run instead of the definition's (a name on PATH or a path)",
    )
    partitions: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, description="only in these partitions (queues); empty: in all"
    )

    @property
    def key(self) -> tuple[str, str]:
        return (self.app, self.version)


class ApplicationsConfig(_Strict):
    """The applications of the catalog this center offers, and how."""

    modules: ModulesConfig = Field(default_factory=ModulesConfig)
    bindings: list[AppBinding] = Field(default_factory=list, max_length=1024)

    @field_validator("bindings")
    @classmethod
    def _once(cls, bindings: list[AppBinding]) -> list[AppBinding]:
        seen: dict[tuple[str, str], int] = {}
        for i, binding in enumerate(bindings):
            first = seen.setdefault(binding.key, i)
            if first != i:
                raise ValueError(
                    f"entry {i}: {binding.app} {binding.version} is already bound by entry {first}"
                )
        return bindings

    def binding(self, app: str, version: str) -> AppBinding | None:
        return next((b for b in self.bindings if b.key == (app, version)), None)


class PriceConfig(_Strict):
    """What the center charges; a job is billed at the price in force when it ran."""

    currency: str = Field("CNY", pattern=r"^[A-Z]{3}$")
    core_hour: float = Field(0.0, ge=0, description="per CPU core per hour")
    gpu_hour: float = Field(0.0, ge=0, description="per GPU per hour")


class EnergyConfig(_Strict):
    pue: float = Field(1.5, ge=1.0, le=5.0, description="power usage effectiveness")
    green_share: float = Field(0.0, ge=0.0, le=1.0, description="share of renewable power, 0-1")
    carbon_intensity: float = Field(
        500.0, ge=0, le=2000, description="gCO2e per kWh of the power the center draws"
    )


#: A container image's name as `docker run` and `apptainer` take it.
IMAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$"


class HostImage(EnvironmentSetup):
    """An image name a TES executor may give at a center without a container runtime,
    and the software on the host that stands for it."""

    name: str = Field(pattern=IMAGE_PATTERN, description="the image name executors give")


class TesConfig(_Strict):
    """How this center runs GA4GH TES tasks (docs/tes.md)."""

    runtime: Literal["none", "apptainer", "podman"] = Field(
        "none", description="the container runtime executors' images run under"
    )
    command: str | None = Field(
        None,
        pattern=r"^/?[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$",
        description="the runtime's program (or bubblewrap's); default: its name on PATH",
    )
    sandbox: Literal["bubblewrap", "none"] = Field(
        "bubblewrap",
        description="without a runtime: bubblewrap gives each task its own view of the paths "
        "it names; none runs executors on the host's own paths",
    )
    images: list[HostImage] = Field(
        default_factory=list, max_length=256, description="allow-listed host images"
    )

    @field_validator("images")
    @classmethod
    def _unique(cls, images: list[HostImage]) -> list[HostImage]:
        names = [image.name for image in images]
        if len(set(names)) != len(names):
            raise ValueError("names an image twice")
        return images

    def image(self, name: str) -> HostImage | None:
        return next((image for image in self.images if image.name == name), None)


class CenterConfig(_Strict):
    """A center file. `type` names a registered center type (`adapters.registry`),
    whose own section (`scheduler` for slurm and pbs, `local` for local) its model
    validates: validating a CenterConfig gives an instance of the type's subclass
    (`config_class`), which holds that section."""

    id: str = Field(pattern=CENTER_ID_PATTERN)
    name: str = Field("", max_length=200)
    type: str = Field(description="a registered center type")
    region: str = Field("", max_length=100)
    ssh: SSHConfig | None = None
    users: dict[str, Identity] = Field(
        default_factory=dict,
        description="federation user -> login at this center ('*': a shared login for anyone)",
    )
    files: FilesConfig = Field(default_factory=FilesConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    price: PriceConfig = Field(default_factory=PriceConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    applications: ApplicationsConfig = Field(default_factory=ApplicationsConfig)
    tes: TesConfig = Field(default_factory=TesConfig)

    @model_validator(mode="wrap")
    @classmethod
    def _of_its_type(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if cls is CenterConfig and isinstance(data, dict) and "type" in data:
            return config_class(data["type"]).model_validate(data)
        return handler(data)

    @field_validator("users")
    @classmethod
    def _user_names(cls, users: dict[str, Identity]) -> dict[str, Identity]:
        for name in users:
            if name != "*" and not re.match(USER_PATTERN, name):
                raise ValueError(f"{name!r} is not a valid federation user name")
        return users

    @model_validator(mode="after")
    def _reached_as_its_type_says(self) -> CenterConfig:
        kind = self.center_type
        if kind.needs_ssh and self.ssh is None:
            raise ValueError(f"a {self.type} center needs an 'ssh' section")
        if not kind.needs_ssh and self.ssh is not None:
            raise ValueError(f"a {self.type} center takes no 'ssh' section")
        if kind.runs_on_gateway_host and self.users:
            raise ValueError(
                f"a {self.type} center runs every job as the gateway's own user; no 'users'"
            )
        return self

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """CenterConfig's: one object per registered type, told apart by `type`."""
        if cls is not CenterConfig:
            return super().model_json_schema(*args, **kwargs)
        classes = tuple(config_class(kind.name) for kind in center_types())
        union: Any = Annotated[Union[classes], Field(discriminator="type")]  # noqa: UP007
        schema = TypeAdapter(union).json_schema(*args, **kwargs)
        schema["description"] = (
            "A center file; `type` is one of the center types registered where this schema "
            "was made (the committed file: the built-in ones)."
        )
        return schema

    @property
    def center_type(self) -> CenterType:
        """The registered type this center is of."""
        return _TYPE_OF.get(type(self)) or registered_type(self.type)

    @property
    def settings(self) -> BaseModel:
        """The center's section of its type (`scheduler`, `local`, ...)."""
        return cast(BaseModel, getattr(self, self.center_type.section))

    def login_for(self, user: str) -> str | None:
        """The login `user` runs as here; None when the center does not map them."""
        identity = self.users.get(user) or self.users.get("*")
        return identity.login if identity else None


_TYPE_OF: dict[type[CenterConfig], CenterType] = {}


def _unknown_type(value: object, error: UnknownCenterType) -> ValidationError:
    message = f"must be one of the known center types ({', '.join(error.known)})"
    if error.broken:
        message += f"; {error.broken}"
    detail = InitErrorDetails(
        type=PydanticCustomError("unknown_center_type", message), loc=("type",), input=value
    )
    return ValidationError.from_exception_data("CenterConfig", [detail])


@cache
def _config_class_of(kind: CenterType) -> type[CenterConfig]:
    if kind.section in CenterConfig.model_fields:
        raise ValueError(f"center type {kind.name}: section {kind.section!r} is a common field")
    title = "".join(part.title() for part in re.split(r"[-_]", kind.name)) + "CenterConfig"
    fields: dict[str, Any] = {
        "type": (Literal[kind.name], Field(description=kind.description or kind.name)),
        kind.section: (
            kind.settings_model,
            Field(default_factory=kind.settings_model, description=f"the {kind.name} settings"),
        ),
    }
    doc = f"A center file of type {kind.name}" + (
        f": {kind.description}." if kind.description else "."
    )
    model = create_model(title, __base__=CenterConfig, __module__=__name__, __doc__=doc, **fields)
    _TYPE_OF[model] = kind
    return model


def config_class(type_name: object) -> type[CenterConfig]:
    """The model of a center file of the named type; a ValidationError at `type`
    naming the known types when no type has that name."""
    try:
        kind = registered_type(type_name)
    except UnknownCenterType as exc:
        raise _unknown_type(type_name, exc) from None
    return _config_class_of(kind)
