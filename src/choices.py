"""String arguments checked against the ``Literal`` annotation that declares their choices.

The annotation is the one list of choices: LightningCLI validates config files against it, and
``check_choices`` gives Python callers (tests, notebooks, scripts) the same error, naming the key.
"""

from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args, get_origin, get_type_hints


def check_choices(fn: Callable[..., Any], values: Mapping[str, Any]) -> None:
    """Raise ``ValueError("key='x' is not one of a, b")`` for any ``Literal``-annotated argument of ``fn``
    whose value in ``values`` (e.g. the constructor's ``locals()``) is not one of its choices."""
    hints = get_type_hints(fn)
    for key, value in values.items():
        hint = hints.get(key)
        if get_origin(hint) is Literal and value not in (allowed := get_args(hint)):
            raise ValueError(f"{key}={value!r} is not one of {', '.join(map(str, allowed))}")
