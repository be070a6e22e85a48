"""The OpenAPI 3.1 document: Litestar's, completed with what it cannot see.

``POST /v1/events`` decodes its body itself (one msgspec pass that reports the
exact failing field), so Litestar does not know the body's type. The schema of
that body comes from msgspec, the same types that decode it; errors are
documented once, as problem details, on every operation. msgspec leaves out
which keys a ``dict[Literal[...], X]`` takes (policy weights by favor kind);
they are added as ``propertyNames``, so the document refuses what the decoder does.
"""

from __future__ import annotations

import inspect as pydoc_inspect
from collections.abc import Iterator
from typing import Any, Final

import msgspec
from litestar import Litestar
from msgspec import inspect

from ledger.api.problems import PROBLEM_JSON, ProblemDetails
from ledger.events import cloudevents
from ledger.events.envelope import EventBatch
from ledger.events.vocabulary import PolicyChanged
from ledger.webhooks.core import RotateIn, WebhookIn

_REF: Final = "#/components/schemas/{name}"
_METHODS: Final = ("get", "post", "put", "patch", "delete")


def build_document(app: Litestar) -> dict[str, Any]:
    document = app.openapi_schema.to_schema()
    (batch, problem, cloudevent, webhook_in, rotate_in, policy), components = (
        msgspec.json.schema_components(
            [
                EventBatch,
                ProblemDetails,
                cloudevents.CloudEvent,
                WebhookIn,
                RotateIn,
                PolicyChanged,
            ],
            ref_template=_REF,
        )
    )
    _clean_descriptions(components)
    # Extension attributes and `data` ride beside the context attributes.
    ce_schema = components["CloudEvent"]
    ce_schema.pop("additionalProperties", None)
    ce_schema["properties"]["data"] = {"type": "object", "description": "the event's data"}
    ce_schema["required"] = [*ce_schema["required"], "time", "data"]
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(components)
    for component, name, keys in _literal_keyed_dicts([EventBatch]):
        _restrict_keys(schemas[component]["properties"][name], keys)
    document["components"]["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `ledger keys create --tenant NAME`.",
        }
    }
    bodies = {
        "EventBatch": batch,
        "WebhookIn": webhook_in,
        "RotateIn": rotate_in,
        "PolicyChanged": policy,
    }
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            handler_opt = _opt_of(app, path, method)
            if "scope" in handler_opt:
                operation["security"] = [{"apiKey": []}]
                operation.setdefault("description", "")
                operation["description"] = (
                    operation["description"] + f"\n\nNeeds scope `{handler_opt['scope']}`."
                ).strip()
            body_name = handler_opt.get("request_body")
            if body_name is not None:
                content = {"application/json": {"schema": bodies[body_name]}}
                if body_name == "EventBatch":
                    content[cloudevents.SINGLE] = {"schema": cloudevent}
                    content[cloudevents.BATCH] = {"schema": {"type": "array", "items": cloudevent}}
                operation["requestBody"] = {"required": body_name != "RotateIn", "content": content}
                created = operation["responses"].get("201")
                if created is not None and body_name == "EventBatch":
                    operation["responses"]["200"] = {
                        **created,
                        "description": "Every event was already stored: a retry, same positions.",
                    }
            responses = operation.setdefault("responses", {})
            responses.pop("400", None)
            responses["default"] = {
                "description": "An error, as RFC 9457 problem details naming the field at fault.",
                "content": {PROBLEM_JSON: {"schema": problem}},
            }
    return document


def _literal_keyed_dicts(types: list[Any]) -> Iterator[tuple[str, str, list[str]]]:
    """(component, property, allowed keys) for every struct field that is a dict
    keyed by a ``Literal``, anywhere inside ``types``."""
    seen: set[type] = set()
    pending: list[inspect.Type] = list(inspect.multi_type_info(types))
    while pending:
        node = pending.pop()
        if isinstance(node, inspect.StructType):
            if node.cls in seen:
                continue
            seen.add(node.cls)
            for field in node.fields:
                for option in _options(field.type):
                    if isinstance(option, inspect.DictType) and isinstance(
                        option.key_type, inspect.LiteralType
                    ):
                        keys = [str(v) for v in option.key_type.values]
                        yield node.cls.__name__, field.encode_name, keys
                pending.append(field.type)
        elif isinstance(node, inspect.UnionType):
            pending.extend(node.types)
        elif isinstance(node, inspect.ListType | inspect.VarTupleType):
            pending.append(node.item_type)
        elif isinstance(node, inspect.TupleType):
            pending.extend(node.item_types)
        elif isinstance(node, inspect.DictType):
            pending.append(node.value_type)
        elif isinstance(node, inspect.Metadata):
            pending.append(node.type)


def _options(node: inspect.Type) -> list[inspect.Type]:
    while isinstance(node, inspect.Metadata):
        node = node.type
    return list(node.types) if isinstance(node, inspect.UnionType) else [node]


def _restrict_keys(schema: dict[str, Any], keys: list[str]) -> None:
    for branch in [schema, *schema.get("anyOf", [])]:
        if branch.get("type") == "object":
            branch["propertyNames"] = {"enum": keys}


def _opt_of(app: Litestar, path: str, method: str) -> dict[str, Any]:
    for route in app.routes:
        if route.path_format != path:
            continue
        for handler in getattr(route, "route_handlers", []):
            if method.upper() in getattr(handler, "http_methods", ()):
                opt: dict[str, Any] = handler.opt
                return opt
    return {}


def _clean_descriptions(node: Any) -> None:
    """Docstrings as ``inspect.cleandoc`` leaves them: msgspec 0.23 dedents them
    and earlier versions did not, and the committed document must not depend on
    which one is installed."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "description" and isinstance(value, str):
                node[name] = pydoc_inspect.cleandoc(value)
            else:
                _clean_descriptions(value)
    elif isinstance(node, list):
        for item in node:
            _clean_descriptions(item)


def render(app: Litestar) -> bytes:
    """The committed form: stable key order, two-space indents, final newline."""
    return (
        msgspec.json.format(msgspec.json.encode(build_document(app), order="sorted"), indent=2)
        + b"\n"
    )


if __name__ == "__main__":
    import sys

    from ledger.api.app import create_app

    # The document does not depend on the database; the app is never started.
    sys.stdout.buffer.write(render(create_app("postgresql://unused")))
