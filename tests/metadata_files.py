"""Files with metadata for the tests: camera EXIF, IPTC/XMP, and C2PA-signed pictures.

The C2PA files are signed with a certificate authority and a signer made here with the
`cryptography` package, in the profile the C2PA library requires of a signing certificate.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

import c2pa
import pyexiv2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

AI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


def jpeg(image: Image.Image, quality: int = 90, **save: Any) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality, **save)
    return buffer.getvalue()


def with_tags(
    data: bytes,
    *,
    exif: dict[str, str] | None = None,
    iptc: dict[str, Any] | None = None,
    xmp: dict[str, Any] | None = None,
) -> bytes:
    """The file with these Exiv2 tags written into it."""
    with pyexiv2.ImageData(data) as image:
        if exif:
            image.modify_exif(exif)
        if iptc:
            image.modify_iptc(iptc)
        if xmp:
            image.modify_xmp(xmp)
        return bytes(image.get_bytes())


def camera_file(image: Image.Image, taken: str = "2024:05:06 07:08:09") -> bytes:
    """A camera JPEG: make, model, software, capture time with offset, GPS; IPTC and XMP."""
    return with_tags(
        jpeg(image),
        exif={
            "Exif.Image.Make": "Canon",
            "Exif.Image.Model": "Canon EOS R5",
            "Exif.Image.Software": "Adobe Photoshop 25.0",
            "Exif.Photo.DateTimeOriginal": taken,
            "Exif.Photo.OffsetTimeOriginal": "+02:00",
            "Exif.GPSInfo.GPSLatitude": "52/1 30/1 3600/100",
            "Exif.GPSInfo.GPSLatitudeRef": "N",
            "Exif.GPSInfo.GPSLongitude": "13/1 24/1 0/1",
            "Exif.GPSInfo.GPSLongitudeRef": "W",
        },
        iptc={"Iptc.Application2.Byline": ["Jane Iptc"], "Iptc.Application2.Credit": "Wire"},
        xmp={
            "Xmp.dc.creator": ["Jane Doe"],
            "Xmp.dc.description": {'lang="x-default"': "Crowds at the harbour"},
            "Xmp.iptcExt.DigitalSourceType": CAPTURE,
        },
    )


def with_segment(data: bytes, payload: bytes, marker: int = 0xE1) -> bytes:
    """A JPEG with one more APPn segment right after its start marker."""
    segment = bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:2] + segment + data[2:]


XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"


def xmp_packet(body: str, doctype: str = "") -> bytes:
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        f"{doctype}"
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" {body}/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def entity_bomb() -> bytes:
    """An XMP packet whose DOCTYPE expands to a billion characters (the "billion laughs")."""
    entities = ['<!ENTITY a0 "laughlaughlaugh">'] + [
        f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10)
    ]
    return XMP_HEADER + xmp_packet('dc:format="&a9;"', f"<!DOCTYPE x [{''.join(entities)}]>")


@dataclass(frozen=True)
class Signing:
    """A certificate authority (the trust anchor) and a signer it issued."""

    ca_pem: bytes
    chain_pem: bytes  # the signer's certificate, then the authority's
    key_pem: bytes

    def sign(self, data: bytes, *, source_type: str = AI, title: str = "made.jpg") -> bytes:
        """The JPEG with a C2PA manifest: a c2pa.created action, signed by this signer."""
        action = {"action": "c2pa.created", "digitalSourceType": source_type}
        manifest = {
            "claim_generator_info": [{"name": "Newsroom Camera App", "version": "2.1"}],
            "title": title,
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
        }
        signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(
                alg=b"es256", sign_cert=self.chain_pem, private_key=self.key_pem, ta_url=None
            )
        )
        out = io.BytesIO()
        c2pa.Builder(manifest).sign(signer, "image/jpeg", io.BytesIO(data), out)
        return out.getvalue()


def make_signing(organisation: str = "Test Newsroom") -> Signing:
    """A fresh authority and signer, valid from yesterday for a month."""

    def name(common: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            ]
        )

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name(f"{organisation} CA"))
        .issuer_name(name(f"{organisation} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("Photo Desk Signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Signing(
        ca_pem=ca.public_bytes(pem),
        chain_pem=leaf.public_bytes(pem) + ca.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=not cert_sign,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def tamper_pixels(data: bytes) -> bytes:
    """The file with one byte of its compressed pixels changed (the manifest left as it is)."""
    changed = bytearray(data)
    changed[len(changed) - 200] ^= 0xFF
    return bytes(changed)
