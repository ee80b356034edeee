"""Content Credentials (C2PA) of a picture, read offline with the C2PA project's c2pa-python.

The manifest store embedded in the file is validated by the C2PA library itself: the claim
signature, the hashes that bind the manifest to the pixels, and the signer's certificate chain
against the configured trust anchors. Nothing is fetched: remote manifests and OCSP are off, so a
check never reaches the network and a picture cannot make the server call out.

States, as the C2PA library reports them:
- `trusted`: signed, intact, and the signer chains to a configured trust anchor;
- `valid`: signed and intact, but the signer is not in the trust list (anyone can sign);
- `invalid`: the picture no longer matches its signature, or the signature itself fails.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import c2pa

log = logging.getLogger(__name__)

STATES = {"Trusted": "trusted", "Valid": "valid", "Invalid": "invalid"}
# The codes that say the signer is merely unknown; they do not make a credential invalid.
UNTRUSTED = "signingCredential.untrusted"
MAX_ITEMS = 32  # actions and error codes kept of one manifest
MAX_TEXT = 300  # characters of a generator or signer name


class TrustAnchorsUnreadable(ValueError):
    """The configured trust-anchor file is missing or not PEM; the message says which."""


@dataclass(frozen=True)
class Credentials:
    """What the active C2PA manifest of a picture says, and whether it holds."""

    state: str  # trusted | valid | invalid
    generator: str | None = None  # the claim generator (the app that wrote the manifest)
    signer: str | None = None  # the signing certificate's subject (common name, organisation)
    signed_at: str | None = None  # the signature's time stamp, when it has one
    actions: list[str] = field(default_factory=list)  # e.g. c2pa.created, c2pa.edited
    digital_source_type: str | None = None  # IPTC's term of the c2pa.created action
    errors: list[str] = field(default_factory=list)  # the validation failure codes

    def as_dict(self) -> dict[str, Any]:
        """The `c2pa` object of a picture's metadata (absent fields are null)."""
        return {
            "state": self.state,
            "generator": self.generator,
            "signer": self.signer,
            "signed_at": self.signed_at,
            "actions": list(self.actions),
            "digital_source_type": self.digital_source_type,
            "errors": list(self.errors),
        }


def load_trust_anchors(path: str) -> str | None:
    """The PEM text of the trust-anchor file ("" = none); TrustAnchorsUnreadable if unusable."""
    if not path.strip():
        return None
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustAnchorsUnreadable(
            f"The C2PA trust-anchor file {file} cannot be read ({exc.__class__.__name__}): set "
            "IMGSEARCH_METADATA__TRUST_ANCHORS to a PEM file of certificates, or to empty."
        ) from exc
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise TrustAnchorsUnreadable(
            f"The C2PA trust-anchor file {file} holds no PEM certificate: set "
            "IMGSEARCH_METADATA__TRUST_ANCHORS to a PEM file of certificates, or to empty."
        )
    return text


class CredentialReader:
    """Reads the C2PA manifest of pictures; build once per process (the trust list is parsed)."""

    def __init__(self, trust_anchors: str | None = None) -> None:
        config: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
        if trust_anchors:
            config["trust"] = {"trust_anchors": trust_anchors}
        self._config = config

    def read(self, data: bytes, content_type: str) -> Credentials | None:
        """The picture's credentials; None when it carries none (C2paError for a broken store)."""
        context = c2pa.Context.from_dict(self._config)
        try:
            with c2pa.Reader(content_type, io.BytesIO(data), context=context) as reader:
                report = json.loads(reader.json())
        except c2pa.C2paError.ManifestNotFound:
            return None
        except c2pa.C2paError.NotSupported:
            return None
        return credentials_of(report)


def credentials_of(report: dict[str, Any]) -> Credentials:
    """The fields this product shows, from the C2PA library's JSON report."""
    manifests = report.get("manifests") or {}
    active = manifests.get(report.get("active_manifest") or "") or {}
    state = STATES.get(str(report.get("validation_state")), "invalid")
    failures = [
        str(status.get("code"))
        for status in report.get("validation_status") or []
        if isinstance(status, dict) and status.get("code")
    ]
    if state != "invalid":
        failures = [code for code in failures if code != UNTRUSTED]
    actions, source_type = _actions(active.get("assertions") or [])
    signature = active.get("signature_info") or {}
    return Credentials(
        state=state,
        generator=_generator(active),
        signer=_short(
            ", ".join(
                str(part)
                for part in (signature.get("common_name"), signature.get("issuer"))
                if part
            )
        ),
        signed_at=_short(signature.get("time")),
        actions=actions[:MAX_ITEMS],
        digital_source_type=source_type,
        errors=failures[:MAX_ITEMS],
    )


def _generator(manifest: dict[str, Any]) -> str | None:
    info = manifest.get("claim_generator_info")
    if isinstance(info, list) and info and isinstance(info[0], dict):
        name, version = info[0].get("name"), info[0].get("version")
        if name:
            return _short(f"{name} {version}" if version else str(name))
    return _short(manifest.get("claim_generator"))


def _actions(assertions: list[Any]) -> tuple[list[str], str | None]:
    """The action names of the c2pa.actions assertions, and the created action's source type."""
    names: list[str] = []
    source_type: str | None = None
    for assertion in assertions:
        if not isinstance(assertion, dict):
            continue
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        data = assertion.get("data")
        for action in data.get("actions") or [] if isinstance(data, dict) else []:
            if not isinstance(action, dict) or not action.get("action"):
                continue
            names.append(str(action["action"])[:MAX_TEXT])
            kind = action.get("digitalSourceType")
            if kind and (source_type is None or action["action"] == "c2pa.created"):
                source_type = str(kind)[:MAX_TEXT]
    return names, source_type


def _short(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)[:MAX_TEXT]
