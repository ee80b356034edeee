"""The API's request and response bodies, and the responses its routes document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from search.query import MAX_EXAMPLES, MAX_TOP_K
from store.index import Strategy

# What the server reads as an example: an image URL, or a catalog id (a UUID, as Python reads it).
URL_PATTERN = r"^\s*[Hh][Tt][Tt][Pp][Ss]?://\S+\s*$"
ID_PATTERN = r"^\s*(urn:uuid:)?\{?[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\}?\s*$"
EXAMPLE: dict[str, Any] = {"anyOf": [{"pattern": URL_PATTERN}, {"pattern": ID_PATTERN}]}
SOME_TEXT = r"\S"
DATE: dict[str, Any] = {"anyOf": [{"format": "date"}, {"format": "date-time"}]}


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str


class FilterBody(BaseModel):
    """Payload filters of a JSON search."""

    model_config = ConfigDict(extra="forbid")

    source: list[str] = Field(default_factory=list, description="any of these sources")
    category: list[str] = Field(default_factory=list, description="any of these categories")
    since: str | None = Field(default=None, description="published on or after (ISO 8601)")
    until: str | None = Field(default=None, description="published on or before (ISO 8601)")
    words: str | None = Field(default=None, description="every word in the title")

    @field_validator("source", "category", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SearchBody(BaseModel):
    """A JSON search: examples by URL or catalog id, negatives, text, filters, paging."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None, description="an image URL to search with", pattern=URL_PATTERN
    )
    positive: list[str] = Field(
        default_factory=list,
        description="catalog ids or image URLs",
        max_length=MAX_EXAMPLES,
        json_schema_extra={"items": {"type": "string", **EXAMPLE}},
    )
    negative: list[str] = Field(
        default_factory=list,
        description="catalog ids or image URLs",
        max_length=MAX_EXAMPLES,
        json_schema_extra={"items": {"type": "string", **EXAMPLE}},
    )
    text: str | None = Field(
        default=None, description="words describing the picture (CLIP)", pattern=SOME_TEXT
    )
    filter: FilterBody = Field(default_factory=FilterBody)
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    offset: int = Field(default=0, ge=0)
    strategy: Strategy = Strategy.AVERAGE_VECTOR
    threshold: float | None = None


def error(description: str) -> dict[str, Any]:
    """A documented error response."""
    return {"model": ErrorBody, "description": description}


UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: error("the file is not a usable image"),
    413: error("the upload is above the limit"),
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error("the API token is missing"),
    403: error("the API token is wrong"),
}
UNKNOWN_ID: dict[int | str, dict[str, Any]] = {404: error("no image with this id")}
