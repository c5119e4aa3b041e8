"""Models built from values that passed validation already, without validating them again.

A worker builds its `Job` from what the producer validated and its `LLMResult` from a
validated `ProviderResponse`; validating either again cost a worker at 0 ms ~4-6 µs per
request each (#22). pydantic's own unchecked constructor, `model_construct`, is no cheaper: it
walks every field in Python and, for a field left to its `default_factory`, inspects the
factory's signature on every call (~70 µs for a `Job`). `trusted` sets what `model_construct`
sets, and nothing else; `tests/unit/test_trusted.py` compares the two and breaks if pydantic
changes what an instance holds.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_set = object.__setattr__


def trusted(cls: type[M], fields: dict[str, Any], given: set[str]) -> M:
    """An instance of `cls` holding `fields` as they are: every field of `cls`, in declaration
    order, each of its declared type. `given` is the set of fields the caller set (pydantic's
    `model_fields_set`). Only for models with no private attributes, post-init or extras."""
    model = cls.__new__(cls)
    _set(model, "__dict__", fields)
    _set(model, "__pydantic_fields_set__", given)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


def assign(instance: BaseModel, /, **values: Any) -> None:
    """Set fields of `instance` as assigning them does (each value in its field's place, each
    name joins `model_fields_set`), without pydantic's `__setattr__`: two Python calls per
    field (#22). Each value must be of its field's declared type already."""
    instance.__dict__.update(values)
    instance.__pydantic_fields_set__.update(values)


def fits(cls: type[BaseModel]) -> bool:
    """Whether `trusted` builds instances of `cls` as `model_construct` does (tests ask)."""
    return (
        cls.__pydantic_post_init__ is None
        and not cls.__private_attributes__
        and cls.model_config.get("extra") != "allow"
        and not cls.__pydantic_root_model__
    )
