"""The strict base of every config and the size caps shared by the configs and the suites."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator

from ctrw.catalog import EPS_8, STEP_2

__all__ = [
    "EPS_8",
    "MAX_EPOCHS",
    "MAX_SEED",
    "MAX_SYNTHETIC_BYTES",
    "MAX_TEST_IMAGES",
    "MAX_TRAIN_IMAGES",
    "NO_NUL",
    "STEP_2",
    "StrictModel",
    "integral_floats_to_int",
]

MAX_EPOCHS = 1000
# Size caps (images). The cost estimate (ctrw.cost) bounds what a job computes; these bound what a
# request may ask a worker to hold: ImageNet's training set is 1.28M images, its validation 50k.
MAX_TRAIN_IMAGES = 2_000_000
MAX_TEST_IMAGES = 100_000
# Synthetic data lives in memory as uint8: N x C x S x S bytes for both splits together.
MAX_SYNTHETIC_BYTES = 4 * 1024**3
# Seeds seed torch, numpy-style generators and derived streams: 32 bits, like numpy's.
MAX_SEED = 2**32 - 1


# No NUL character: PostgreSQL text and JSONB cannot store one.
NO_NUL = r"^[^\x00]*$"


def _tag_required(schema: dict[str, Any]) -> None:
    # The bounds' union tells its members apart by `kind`: a body must name it (the default is for
    # Python callers), so the schema says it is required.
    if "kind" in schema.get("properties", {}) and "kind" not in schema.setdefault("required", []):
        schema["required"].append("kind")


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a config must not silently use a default.

    Types are strict (``false`` is not a number, ``"3"`` not an integer, ``1`` not a boolean) and
    numbers finite (NaN and Infinity are refused, PostgreSQL's JSONB cannot store them), so what
    the JSON schema documents is exactly what is accepted. Config files are read leniently
    (``load_config_file``): YAML writes 1e-3 as a string.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=False, strict=True, allow_inf_nan=False, json_schema_extra=_tag_required
    )

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        return integral_floats_to_int(cls, data)


def _takes_int(annotation: Any) -> bool:
    """Whether a field's type is an integer (optionally None, a list of them, an int Literal)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is int:
        return True
    if origin is Annotated:
        return _takes_int(args[0])
    if origin is Literal:
        return all(isinstance(a, int) and not isinstance(a, bool) for a in args)
    if origin in (Union, UnionType, list):
        return any(_takes_int(a) for a in args if a is not type(None))
    return False


def _as_int(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def integral_floats_to_int(model: type[BaseModel], data: Any) -> Any:
    """``data`` with integral floats (2.0, 1e30) in the model's integer fields made ints: JSON
    Schema counts 2.0 as an integer, so the strict types must take it (and bounds then apply)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name, info in model.model_fields.items():
        v = out.get(name)
        if isinstance(v, float | list) and _takes_int(info.annotation):
            out[name] = [_as_int(x) for x in v] if isinstance(v, list) else _as_int(v)
    return out
