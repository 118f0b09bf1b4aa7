"""The reference page of every configuration key, generated from the dataclasses.

``docs/config.md`` is this module's output (``python -m ich.config_reference > docs/config.md``);
a test fails when the two differ, so the page cannot fall behind the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

from ich.config import RunConfig


def _type_text(tp: Any) -> str:
    text = str(tp).replace("typing.", "").replace("NoneType", "None")
    return getattr(tp, "__name__", None) if isinstance(tp, type) else text  # type: ignore[return-value]


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _value_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, str):
        return value or '""'
    return str(value)


def render_reference() -> str:
    """Markdown: one table per section (key, type, default) under the section's docstring."""
    lines = [
        "# Configuration reference",
        "",
        "Every key of a run configuration (`ich train --config FILE`, `key=value` overrides,",
        "`RUN/config.yaml`), generated from the dataclasses in `src/ich/config.py` by",
        "`python -m ich.config_reference > docs/config.md`. Defaults are the packaged recipe",
        "(`src/ich/configs/default.yaml`); `ich train --print-config` prints a resolved config.",
        "Unknown keys and wrongly typed values are errors.",
        "",
    ]
    hints = typing.get_type_hints(RunConfig)
    for field in dataclasses.fields(RunConfig):
        tp = hints[field.name]
        if not dataclasses.is_dataclass(tp):
            lines += [f"## `{field.name}`", "", f"Type `{_type_text(tp)}`, default "
                      f"`{_value_text(_default(field))}`.", ""]
            continue
        doc = inspect.cleandoc(tp.__doc__ or "")
        lines += [f"## `{field.name}`", "", doc, "", "| key | type | default |",
                  "|---|---|---|"]
        sub_hints = typing.get_type_hints(tp)
        for sub in dataclasses.fields(tp):
            value = _value_text(_default(sub)).replace("|", "\\|")
            kind = _type_text(sub_hints[sub.name]).replace("|", "\\|")
            lines.append(f"| `{field.name}.{sub.name}` | `{kind}` | `{value}` |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_reference(), end="")
