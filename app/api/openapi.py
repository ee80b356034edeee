"""The OpenAPI schema of the bodies the routes parse themselves (forms and JSON)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.images import CAPTION_FIELDS
from app.api.schemas import SearchBody

FILE = {"type": "string", "format": "binary"}
FILES = {"type": "array", "items": FILE}
TEXTS = {"type": "array", "items": {"type": "string"}}


def _form(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"multipart/form-data": {"schema": schema}}


def search_form() -> dict[str, Any]:
    """The multipart fields of POST /search."""
    return {
        "image": FILES,
        "negative_image": FILES,
        **{name: TEXTS for name in ("url", "positive", "negative", "source", "category")},
        **{name: {"type": "string"} for name in ("text", "since", "until", "words")},
        "strategy": SearchBody.model_json_schema()["properties"]["strategy"],
        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000},
        "offset": {"type": "integer", "minimum": 0},
        "threshold": {"type": "number"},
    }


def install_openapi(app: FastAPI) -> None:
    """Document the bodies of /search (JSON or multipart), /check and /images (multipart)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        body = SearchBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components["SearchBody"] = body
        paths = schema["paths"]
        paths["/search"]["post"]["requestBody"] = {
            "required": True,
            "content": {
                **_form(search_form()),
                "application/json": {"schema": {"$ref": "#/components/schemas/SearchBody"}},
            },
        }
        paths["/check"]["post"]["requestBody"] = {
            "required": True,
            "content": _form({"image": FILE, "top_k": search_form()["top_k"]}, ["image"]),
        }
        captions = {name: {"type": "string"} for name in CAPTION_FIELDS}
        paths["/images"]["post"]["requestBody"] = {
            "required": True,
            "content": _form({"image": FILE, **captions}, ["image"]),
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
