"""A registry per extension point: `kind` -> (pydantic config class, builder), so YAML maps to code.

Each entry is a pydantic config class whose `kind` field is a Literal; the scenario model takes
the discriminated union of all registered classes, so no import strings ever come from configs.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Generic, TypeVar, Union, get_args

from pydantic import BaseModel, ConfigDict, Field

C = TypeVar("C", bound=BaseModel)


class Strict(BaseModel):
    """The base of every config model: an unknown key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Registry(Generic[C]):
    """Kinds registered for one extension point (policies, arrivals, latency models, schedulers)."""

    def __init__(self, name: str):
        self.name = name
        self._entries: dict[str, tuple[type[BaseModel], Callable[..., Any]]] = {}

    def register(self, config_cls: type[C]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register `builder(config, ...)` for config_cls, keyed by its `kind` literal."""
        kind = _kind_of(config_cls)

        def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
            if kind in self._entries:
                raise RuntimeError(f"{self.name}: kind {kind!r} registered twice")
            self._entries[kind] = (config_cls, builder)
            return builder

        return deco

    def kinds(self) -> list[str]:
        return list(self._entries)

    def builder(self, kind: str) -> Callable[..., Any]:
        """What `build` calls for `kind` (for policies: the Policy class)."""
        return self._entries[kind][1]

    def build(self, config: BaseModel, *args: Any, **kwargs: Any) -> Any:
        return self._entries[config.kind][1](config, *args, **kwargs)  # type: ignore[attr-defined]

    def config_union(self) -> Any:
        """The `kind`-discriminated union of every registered config class, for pydantic fields."""
        classes = tuple(cls for cls, _ in self._entries.values())
        if len(classes) == 1:
            return classes[0]
        return Annotated[Union[classes], Field(discriminator="kind")]  # type: ignore[valid-type]


def _kind_of(config_cls: type[BaseModel]) -> str:
    field = config_cls.model_fields.get("kind")
    args = get_args(field.annotation) if field is not None else ()
    if len(args) != 1 or not isinstance(args[0], str):
        raise TypeError(f"{config_cls.__name__} needs a `kind: Literal['...']` field")
    return args[0]
