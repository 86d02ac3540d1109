"""YAML experiment configs → frozen, validated dataclasses.

A config has the sections ``model``, ``data``, ``solver``, ``training``, ``target`` and ``output`` next to
``name``, ``description``, ``seed`` and ``experiment`` (the kind of experiment to run). Every key is typed and
range-checked before anything is compiled; an unknown key at any depth, a wrong type or an out-of-range
value raises :class:`ConfigError` with one message naming the key, the value and what is allowed.
``--set section.key=value`` overrides are parsed as YAML scalars and validated the same way.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml

from .activations import ACTIVATIONS
from .field import field_from_parameters
from .transport import CFL_LIMITS

__all__ = ["ConfigError", "ExperimentConfig", "apply_overrides", "load_config", "parse_config", "to_dict"]


class ConfigError(ValueError):
    """A config (or an override) that is malformed, has an unknown key, a wrong type or a bad value."""


def _spec(default, allowed: str = "", check: Callable[[Any], bool] | None = None):
    return field(default=default, metadata={"allowed": allowed, "check": check})


def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0


def _one_of(*options):
    return lambda v: v in options


def _domain_ok(v) -> bool:
    return len(v) in (1, 2) and all(
        isinstance(ab, list) and len(ab) == 2 and all(map(_is_number, ab)) and ab[0] < ab[1] for ab in v
    )


def _times_ok(v) -> bool:
    return all(map(_is_number, v)) and v[0] >= 0 and all(a < b for a, b in itertools.pairwise(v))


@dataclass(frozen=True)
class ModelConfig:
    """The network: σ(W x + b) over ``layers`` explicit-Euler layers on [0, T]."""

    activation: str = _spec("identity", f"one of {sorted(ACTIVATIONS)}", _one_of(*ACTIVATIONS))
    W: list = _spec(None, "a d×d (or L×d×d) list of numbers, e.g. [[-1.0]]")
    b: list = _spec(None, "a list of d numbers (or L lists)")
    T: float = _spec(1.0, "a finite number > 0", _positive)
    layers: int = _spec(100, "an integer >= 1", _positive)
    diffusion: float = _spec(0.0, "a number >= 0", _non_negative)
    feedback: float | None = _spec(None, "a number (the β of the bias β m1/m0) or null")


@dataclass(frozen=True)
class DataConfig:
    """The initial data / samples."""

    kind: str = _spec(
        "uniform",
        "one of uniform, gaussian, vehicles, table1, regression, bimodal, curve",
        _one_of("uniform", "gaussian", "vehicles", "table1", "regression", "bimodal", "curve"),
    )
    low: float = _spec(2.0, "a number")
    high: float = _spec(8.0, "a number")
    mean: float = _spec(0.0, "a number")
    std: float = _spec(1.0, "a number > 0", _positive)
    particles: int = _spec(10000, "an integer >= 1", _positive)
    noise: float = _spec(0.1, "a number >= 0", _non_negative)
    threshold: float = _spec(5.0, "a number")


@dataclass(frozen=True)
class SolverConfig:
    """The kinetic solver (or ``particles`` / ``moments`` only)."""

    kind: str = _spec(
        "particles",
        "one of particles, moments, vlasov, fokker_planck",
        _one_of("particles", "moments", "vlasov", "fokker_planck"),
    )
    domain: list | None = _spec(None, "a list of [lo, hi] pairs with lo < hi, one per dimension", _domain_ok)
    cells: int = _spec(400, "an integer >= 2", lambda v: v >= 2)
    scheme: str = _spec(
        "muscl",
        "one of upwind, muscl, cweno3, chang_cooper, scharfetter_gummel",
        _one_of("upwind", "muscl", "cweno3", "chang_cooper", "scharfetter_gummel"),
    )
    limiter: str = _spec("mc", "one of minmod, vanleer, mc", _one_of("minmod", "vanleer", "mc"))
    cfl: float = _spec(0.5, "a number in (0, 1]", lambda v: 0 < v <= 1)
    boundary: str = _spec(
        "outflow", "one of outflow, zero_flux, periodic", _one_of("outflow", "zero_flux", "periodic")
    )
    time_stepper: str = _spec("ssprk2", "one of euler, ssprk2, ssprk3", _one_of("euler", "ssprk2", "ssprk3"))
    method: str = _spec("explicit", "one of explicit, implicit", _one_of("explicit", "implicit"))
    save_at: list | None = _spec(None, "a strictly increasing list of times >= 0", _times_ok)


@dataclass(frozen=True)
class TrainingConfig:
    """Gradient-descent fitting (optax)."""

    optimizer: str = _spec("adam", "one of adam, sgd, lbfgs", _one_of("adam", "sgd", "lbfgs"))
    learning_rate: float = _spec(0.01, "a number > 0", _positive)
    steps: int = _spec(500, "an integer >= 0", _non_negative)
    reg: float = _spec(0.0, "a number >= 0", _non_negative)


@dataclass(frozen=True)
class TargetConfig:
    """Targets the parameters are chosen or fitted for."""

    variance: float | None = _spec(None, "a number > 0 or null", _positive)
    energy: float | None = _spec(None, "a number > 0 or null", _positive)
    mean: float | None = _spec(None, "a number or null")
    std: float | None = _spec(None, "a number > 0 or null", _positive)
    slope: float | None = _spec(None, "a number > 0 or null", _positive)
    intercept: float | None = _spec(None, "a number or null")


@dataclass(frozen=True)
class OutputConfig:
    """What to draw."""

    plots: list | None = _spec(None, "a list of plot names, or null for all of the experiment's plots")
    dpi: int = _spec(120, "an integer between 50 and 600", lambda v: 50 <= v <= 600)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: one YAML file."""

    name: str = _spec(dataclasses.MISSING, "a non-empty string", lambda v: len(v) > 0)
    experiment: str = _spec(dataclasses.MISSING, "the experiment kind (see `meanfield-jax list`)")
    description: str = _spec("", "a string")
    seed: int = _spec(0, "an integer from 0 to 2**32 - 1", lambda v: 0 <= v < 2**32)
    quick: bool = _spec(False, "true or false (a reduced size for tests)")
    precision: str = _spec("float64", "one of float32, float64", _one_of("float32", "float64"))
    model: ModelConfig = _spec(None, "a mapping")
    data: DataConfig = _spec(None, "a mapping")
    solver: SolverConfig = _spec(None, "a mapping")
    training: TrainingConfig = _spec(None, "a mapping")
    target: TargetConfig = _spec(None, "a mapping")
    output: OutputConfig = _spec(None, "a mapping")


_SECTION_DEFAULTS = {
    "model": ModelConfig,
    "data": DataConfig,
    "solver": SolverConfig,
    "training": TrainingConfig,
    "target": TargetConfig,
    "output": OutputConfig,
}


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _numbers_nested(v, depth: int = 0) -> bool:
    """A number, or a non-empty list of them nested at most 3 deep (an L×d×d W; a YAML alias can make a list
    that holds itself)."""
    if isinstance(v, list):
        return depth < 3 and len(v) > 0 and all(_numbers_nested(x, depth + 1) for x in v)
    return _is_number(v)


def _coerce(key: str, value, annotation, allowed: str):
    """Check ``value`` against the field type; ints are accepted for floats."""
    hint = annotation
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    bad = ConfigError(f"{key}: got {value!r}; allowed: {allowed}")
    if value is None:
        if optional or hint is list:
            return None
        raise bad
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if not _is_number(value):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    if hint is list:
        if not isinstance(value, list) or not value:
            raise bad
        if key.endswith(("plots",)):
            if not all(isinstance(x, str) for x in value):
                raise bad
        elif not _numbers_nested(value):
            raise bad
        return value
    raise AssertionError(f"unhandled config type {hint}")


def _build(cls, raw: dict, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown key {where!r}; allowed keys{' in ' + prefix if prefix else ''}: "
                              f"{', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in _SECTION_DEFAULTS and cls is ExperimentConfig:
            section = raw.get(f.name)  # absent or null: the defaults; anything else must be a mapping
            kwargs[f.name] = _build(_SECTION_DEFAULTS[f.name], {} if section is None else section, f.name)
            continue
        if f.name not in raw:
            if f.default is dataclasses.MISSING:
                raise ConfigError(f"missing key {key!r} ({f.metadata['allowed']})")
            kwargs[f.name] = f.default
            continue
        value = _coerce(key, raw[f.name], hints[f.name], f.metadata["allowed"])
        check = f.metadata["check"]
        if value is not None and check is not None and not check(value):
            raise ConfigError(f"{key}: got {raw[f.name]!r}; allowed: {f.metadata['allowed']}")
        kwargs[f.name] = value
    return cls(**kwargs)


def _check_parameters(model: ModelConfig) -> None:
    """W and b of shapes that the model's field takes (:func:`~meanfield_jax.field.field_from_parameters`,
    checked on shapes alone by jax.eval_shape: nothing is computed)."""
    if model.W is None or model.b is None:
        raise ConfigError("model.W and model.b are required (e.g. W: [[-1.0]], b: [0.0])")
    got = f"model.W, model.b: got W={model.W!r}, b={model.b!r}"
    try:
        W, b = np.asarray(model.W, dtype=float), np.asarray(model.b, dtype=float)
    except ValueError:  # ragged nesting
        raise ConfigError(f"{got}; allowed: rectangular lists, W d×d (or L×d×d) and b of d (or L×d) "
                          "numbers") from None
    try:
        jax.eval_shape(lambda W, b: field_from_parameters(W, b, model.layers),
                       jax.ShapeDtypeStruct(W.shape, W.dtype), jax.ShapeDtypeStruct(b.shape, b.dtype))
    except ValueError as exc:
        raise ConfigError(f"{got}; allowed: {exc}") from None


def parse_config(raw: dict) -> ExperimentConfig:
    """Validate a parsed YAML mapping and return the typed config."""
    cfg = _build(ExperimentConfig, raw, "")
    _check_parameters(cfg.model)
    s = cfg.solver
    if s.kind == "vlasov" and s.scheme in CFL_LIMITS and s.cfl > CFL_LIMITS[s.scheme]:
        raise ConfigError(f"solver.cfl: got {s.cfl!r}; allowed: a number in (0, {CFL_LIMITS[s.scheme]}] for "
                          f"scheme {s.scheme!r} (where it keeps the density non-negative)")
    if not cfg.data.low < cfg.data.high:
        low, high = cfg.data.low, cfg.data.high
        raise ConfigError(f"data.low, data.high: got {low!r}, {high!r}; allowed: low < high")
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last one silently). A
    merge key (``<<: *base``) may be overridden, as YAML allows; an unhashable key is left to the loader's
    own error. Numbers such as 1e-3 are floats, as in YAML 1.2 (YAML 1.1 wants a dot: 1.0e-3)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                break
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a YAML config; a missing file or malformed YAML is a ConfigError naming it."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {path} is a folder; allowed: a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config {path}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"malformed YAML in {path}: lists nested past the parser's depth") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"malformed YAML in {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML in {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections, got {type(raw).__name__}")
    return parse_config(raw)


def apply_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Apply ``section.key=value`` overrides (values parsed as YAML) and re-validate."""
    raw = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        dotted, text = item.split("=", 1)
        try:
            value = yaml.load(text, Loader=_UniqueKeyLoader)
        except (yaml.YAMLError, RecursionError):  # RecursionError: lists nested past the parser's depth
            shown = text if len(text) <= 60 else text[:60] + "..."
            raise ConfigError(f"--set {dotted}: cannot parse the value {shown!r}") from None
        parts = dotted.strip().split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                known = ", ".join(sorted(k for k, v in node.items() if isinstance(v, dict)))
                raise ConfigError(f"--set: unknown section {'.'.join(parts[: i + 1])!r}; sections: {known}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"--set: unknown key {dotted!r}; allowed keys there: {', '.join(sorted(node))}")
        node[parts[-1]] = value
    return parse_config(raw)


def to_dict(cfg) -> dict:
    """The config as plain Python data (for YAML dumps and overrides)."""
    return dataclasses.asdict(cfg)
