"""The OpenAPI schema of the bodies the routes parse themselves (forms and JSON)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.banks import ENTRY_FIELDS
from app.api.forms import IMAGE_TYPES
from app.api.images import CAPTION_FIELDS
from app.api.schemas import DATE, EXAMPLE, ID_PATTERN, SOME_TEXT, URL_PATTERN, SearchBody
from search.query import MAX_EXAMPLES
from store.index import Strategy

FILE = {"type": "string", "format": "binary"}
FILES = {"type": "array", "items": FILE}
TEXTS = {"type": "array", "items": {"type": "string"}}


def _form(
    properties: dict[str, Any],
    required: list[str] | None = None,
    rules: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A multipart body whose file fields must be images of the types the decoder reads."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, **(rules or {})}
    if required:
        schema["required"] = required
    encoding = {
        name: {
            "contentType": ", ".join(IMAGE_TYPES),
            # A file part carries a filename; a part without one is a text field.
            "headers": {
                "Content-Disposition": {
                    "schema": {"type": "string"},
                    "example": f'form-data; name="{name}"; filename="photo.jpg"',
                }
            },
        }
        for name in ("image", "negative_image")
        if name in properties
    }
    return {"multipart/form-data": {"schema": schema, "encoding": encoding}}


def _some(name: str, kind: str) -> dict[str, Any]:
    """`name` is present and not empty."""
    shape: dict[str, Any] = {"type": "string"} if kind == "string" else {"minItems": 1}
    return {"required": [name], "properties": {name: shape}}


def _example_rules(*, text: bool, lists: tuple[str, ...]) -> dict[str, Any]:
    """At least one example of what is wanted; text goes with catalog ids only."""
    wanted = [_some(name, "array") for name in lists]
    rules: dict[str, Any] = {"anyOf": [*wanted, _some("text", "string")] if text else wanted}
    if text:
        only_ids = {"items": {"type": "string", "pattern": ID_PATTERN}}
        rules["if"] = _some("text", "string")
        rules["then"] = {
            "properties": {
                "url": {"maxItems": 0, "type": ["null", "array"]},
                "image": {"maxItems": 0},
                "negative_image": {"maxItems": 0},
                "positive": only_ids,
                "negative": only_ids,
            }
        }
    return rules


def search_form(text: bool) -> dict[str, Any]:
    """The multipart fields of POST /search (`text` only where a text model is loaded)."""
    examples = {"type": "array", "maxItems": MAX_EXAMPLES, "items": {"type": "string", **EXAMPLE}}
    return {
        "image": {**FILES, "maxItems": MAX_EXAMPLES},
        "negative_image": {**FILES, "maxItems": MAX_EXAMPLES},
        "url": {
            **TEXTS,
            "maxItems": MAX_EXAMPLES,
            "items": {"type": "string", "pattern": URL_PATTERN},
        },
        "positive": examples,
        "negative": examples,
        **{name: TEXTS for name in ("source", "category")},
        **({"text": {"type": "string", "pattern": SOME_TEXT}} if text else {}),
        **{name: {"type": "string", **DATE} for name in ("since", "until")},
        "words": {"type": "string"},
        "strategy": {"type": "string", "enum": [s.value for s in Strategy]},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000},
        "offset": {"type": "integer", "minimum": 0},
        "threshold": {"type": "number"},
    }


def json_search(body: dict[str, Any], text: bool) -> dict[str, Any]:
    """SearchBody's schema with the rules the server checks: an example, dates, text."""
    body = {**body, "properties": dict(body["properties"])}
    if not text:
        body["properties"].pop("text", None)
    json_rules = _example_rules(text=text, lists=("positive",))
    json_rules["anyOf"].insert(0, _some("url", "string"))
    if text:
        json_rules["then"]["properties"]["url"] = {"type": "null"}
        for name in ("image", "negative_image"):
            json_rules["then"]["properties"].pop(name)
    body.update(json_rules)
    return body


def install_openapi(app: FastAPI, *, text: Callable[[], bool | None]) -> None:
    """Document the bodies of /search (JSON or multipart), /check and /images (multipart).

    The schema says what this server accepts: `text` only where a text model is loaded, at
    least one example, text combined with catalog ids only, dates as ISO 8601, images as files
    of the types the decoder reads. `text()` says whether a text model is loaded (None while
    the models are still loading: that schema is answered but not kept).
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        loaded = text()
        accepts_text = bool(loaded)
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        body = SearchBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components["SearchBody"] = json_search(body, accepts_text)
        filters = components["FilterBody"]["properties"]
        for name in ("since", "until"):
            filters[name] = {"anyOf": [{"type": "string", **DATE}, {"type": "null"}]}
        paths = schema["paths"]
        paths["/search"]["post"]["requestBody"] = {
            "required": True,
            "content": {
                **_form(
                    search_form(accepts_text),
                    rules=_example_rules(text=accepts_text, lists=("image", "url", "positive")),
                ),
                "application/json": {"schema": {"$ref": "#/components/schemas/SearchBody"}},
            },
        }
        paths["/check"]["post"]["requestBody"] = {
            "required": True,
            "content": _form(
                {"image": FILE, "top_k": search_form(accepts_text)["top_k"]}, ["image"]
            ),
        }
        captions = {name: {"type": "string"} for name in CAPTION_FIELDS}
        captions["published_at"] = {"type": "string", **DATE}
        paths["/images"]["post"]["requestBody"] = {
            "required": True,
            "content": _form({"image": FILE, **captions}, ["image"]),
        }
        entry = {name: {"type": "string"} for name in ENTRY_FIELDS}
        paths["/banks/{bank}/entries"]["post"]["requestBody"] = {
            "required": True,
            "content": _form(
                {"image": FILE, "image_id": {"type": "string", "format": "uuid"}, **entry},
                rules={"oneOf": [{"required": ["image"]}, {"required": ["image_id"]}]},
            ),
        }
        if loaded is not None:
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
