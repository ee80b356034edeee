"""One table from each error the core raises to what a person sees.

The page, the HTTP API and the command line all turn a typed error into one sentence through
`describe`; the API answers with its `status`, the CLI exits with its `exit_code`. Inner layers
raise typed errors; only these three boundaries speak to people.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from embed.credentials import TrustAnchorsUnreadable
from embed.decode import DecodeError
from embed.descriptors import TextSearchUnavailable
from embed.encoder import WeightsUnavailable
from embed.sscd import SscdUnavailable
from ingest.manual import ManualAddError
from ingest.pipeline import RunInProgress
from ingest.sources import SourceConfigError
from search.banks import BankError, UnknownEntry
from search.query import FetchFailed, QueryError, UnknownImage
from store.images import StoreError
from store.index import BadFilter, IndexUnavailable

USAGE = 2  # the CLI's exit status for "this command cannot proceed as asked"


def sentence(text: str) -> str:
    """A message as a sentence: capital first letter, final full stop."""
    text = text.strip()
    if not text:
        return "Something went wrong; the log has the details."
    if not text.split(maxsplit=1)[0].endswith(":"):  # "top_k: ..." names a field: kept as is
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _message(exc: BaseException) -> str:
    return sentence(str(exc) or type(exc).__name__)


def _not_an_image(exc: BaseException) -> str:
    reason = exc.reason if isinstance(exc, DecodeError) else str(exc)
    return sentence(f"That file is not a usable image: {reason}")


@dataclass(frozen=True)
class Outcome:
    """How one kind of error reaches a person."""

    kinds: tuple[type[Exception], ...]
    status: int  # the HTTP status of the API's answer
    words: Callable[[BaseException], str] = _message
    unavailable: bool = False  # the service, not the request, is at fault: logged as a warning
    exit_code: int = USAGE


# Most specific first: the first row whose kinds match decides.
OUTCOMES: tuple[Outcome, ...] = (
    Outcome((DecodeError,), 400, _not_an_image),
    Outcome((UnknownImage, UnknownEntry), 404),
    Outcome((FetchFailed,), 400),
    Outcome((QueryError, BadFilter, ManualAddError, SourceConfigError, BankError), 422),
    Outcome((RunInProgress,), 409),
    Outcome((TextSearchUnavailable,), 503),
    Outcome(
        (IndexUnavailable, WeightsUnavailable, SscdUnavailable, StoreError, TrustAnchorsUnreadable),
        503,
        unavailable=True,
    ),
)
# Every error a person is told about in one sentence (the rest are bugs: logged, a 500).
KNOWN: tuple[type[Exception], ...] = tuple(k for o in OUTCOMES for k in o.kinds)
# The errors that mean the index, a model or the image store cannot be used right now.
UNAVAILABLE: tuple[type[Exception], ...] = tuple(
    k for o in OUTCOMES if o.unavailable for k in o.kinds
)


def outcome(exc: BaseException) -> Outcome | None:
    """The table's row for this error, or None when it is not one a person is told about."""
    return next((o for o in OUTCOMES if isinstance(exc, o.kinds)), None)


def describe(exc: BaseException) -> str:
    """The one sentence for a person (each boundary logs the detail where it belongs)."""
    row = outcome(exc)
    return row.words(exc) if row else "Something went wrong; the log has the details."
