"""XML-DSig with signxml: sign our documents (enveloped, RSA-SHA256, exclusive c14n) and verify partners'.

Verification accepts exactly one shape: one enveloped signature, a direct child of the document element,
with one reference covering the whole document, an accepted algorithm, and the partner's configured
certificate. Anything else is refused, which is what defeats signature wrapping (a signature over one
element while the code reads another). Only `Verified.element`, rebuilt from the bytes that were signed,
is trusted afterwards; the ledger records `cert_sha256` (which certificate signed) and `signed_sha256`.
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree
from pydantic import SecretStr
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureConstructionMethod, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature, SignXMLException
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier

from gateway.errors import SignatureInvalid, SignatureMissing
from gateway.soap.xml import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, hardened_parser, parse_xml

DS_NS: Final = "http://www.w3.org/2000/09/xmldsig#"
_DS: Final = {"ds": DS_NS}
_SHA256: Final = hashes.SHA256()

# What we sign with (the brief of the land office's interconnect: RSA-SHA256, SHA-256, exclusive c14n).
SIGNATURE_METHOD: Final = SignatureMethod.RSA_SHA256
DIGEST_ALGORITHM: Final = DigestAlgorithm.SHA256
C14N_METHOD: Final = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0

# What we accept from partners: RSA with SHA-2. SHA-1 (collisions are practical) and everything else is
# refused, even where signxml would accept it.
ACCEPTED_SIGNATURE_METHODS: Final = frozenset(
    {SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA384, SignatureMethod.RSA_SHA512}
)
ACCEPTED_DIGESTS: Final = frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512})
# The enveloped-signature transform and canonicalisations; no XPath or XSLT transform (signxml would skip
# an unknown transform silently, signing less than it seems to).
_ACCEPTED_TRANSFORMS: Final = frozenset(
    {SignatureConstructionMethod.enveloped.value, *(method.value for method in CanonicalizationMethod)}
)

_VERIFY_CONFIG: Final = SignatureConfiguration(
    require_x509=True,
    location="./",  # a direct child of the document element, nowhere deeper
    expect_references=1,
    signature_methods=ACCEPTED_SIGNATURE_METHODS,
    digest_algorithms=ACCEPTED_DIGESTS,
)


@dataclass(frozen=True, slots=True)
class SigningMaterial:
    """Our key and certificate, loaded and checked to belong together (`load_signing_material`)."""

    key_pem: bytes = field(repr=False)
    cert_pem: bytes
    cert_sha256: str


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified document: only `element` (the signed content, signature removed) is to be read."""

    element: etree._Element
    cert_sha256: str
    """SHA-256 hex of the signer certificate's DER: what the ledger records as "who signed"."""
    cert_subject: str
    """The signer certificate's subject (RFC 4514), for operators."""
    signed_sha256: str
    """SHA-256 hex of the canonical bytes that were signed: what the ledger records as "what was signed"."""


# --- keys and certificates (configuration: ValueError with one line the settings layer can show) -----------


def load_signing_material(key_file: Path, cert_file: Path, *, key_password: SecretStr | None = None) -> SigningMaterial:
    """Our RSA private key and its certificate from PEM files; ValueError if unreadable or not a pair."""
    key_pem = _read(key_file, "signing key")
    cert_pem = _read(cert_file, "signing certificate")
    password = key_password.get_secret_value().encode() if key_password is not None else None
    try:
        key = serialization.load_pem_private_key(key_pem, password=password)
    except (ValueError, TypeError) as exc:
        # cryptography's message names the cause (bad password, not PEM), never the key's bytes.
        raise ValueError(f"signing key {key_file}: cannot be loaded ({_first_line(exc)})") from None
    cert = _certificate(cert_pem, cert_file, "signing certificate")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"signing key {key_file}: not an RSA key (RSA-SHA256 signatures need one)")
    if key.public_key().public_numbers() != _public_numbers(cert):
        raise ValueError(f"signing key {key_file} and certificate {cert_file} do not belong together")
    # Kept unencrypted in memory (signxml takes PEM or a key object); the file may stay encrypted on disk.
    plain = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningMaterial(key_pem=plain, cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                           cert_sha256=certificate_sha256(cert))


def load_certificate(cert_file: Path) -> bytes:
    """A partner's certificate (PEM) from a file; ValueError if unreadable or not a certificate."""
    cert = _certificate(_read(cert_file, "partner certificate"), cert_file, "partner certificate")
    return cert.public_bytes(serialization.Encoding.PEM)


def certificate_sha256(cert: x509.Certificate | bytes) -> str:
    """SHA-256 hex of a certificate's DER (the usual certificate fingerprint); PEM bytes accepted."""
    loaded = cert if isinstance(cert, x509.Certificate) else _cert_from_pem(cert)
    return loaded.fingerprint(_SHA256).hex()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None


def _certificate(pem: bytes, path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ValueError(f"{what} {path}: not a PEM certificate ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _public_numbers(cert: x509.Certificate) -> rsa.RSAPublicNumbers | None:
    public = cert.public_key()
    return public.public_numbers() if isinstance(public, rsa.RSAPublicKey) else None


# --- signing ------------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _cert_from_pem(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


@lru_cache(maxsize=8)
def _key_from_pem(pem: bytes) -> rsa.RSAPrivateKey:
    # Cached: loading an RSA key checks it, which costs milliseconds, and the same key signs every document.
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the signing key is not an RSA key")
    return key


def sign(document: etree._Element, *, key_pem: bytes, cert_pem: bytes) -> etree._Element:
    """A signed copy of `document`: enveloped signature as its last child, certificate in KeyInfo.

    `document` itself is left as it was. Raises ValueError when the key and certificate are not a pair.
    """
    key = _key_from_pem(key_pem)
    cert = _cert_from_pem(cert_pem)
    if key.public_key().public_numbers() != _public_numbers(cert):
        raise ValueError("the signing key and certificate do not belong together")
    signer = XMLSigner(
        method=SignatureConstructionMethod.enveloped,
        signature_algorithm=SIGNATURE_METHOD,
        digest_algorithm=DIGEST_ALGORITHM,
        c14n_algorithm=C14N_METHOD,
    )
    # The reference is the whole document ("" or "#<its Id>"), which is what verify() insists on.
    signed: etree._Element = signer.sign(document, key=key, cert=[cert])
    return signed


# --- verification -------------------------------------------------------------------------------------------


def verify(
    document: etree._Element | bytes,
    *,
    trusted_cert_pem: bytes,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Verified:
    """The signed content of `document` if the configured partner certificate signed all of it.

    Raises SignatureMissing without a signature and SignatureInvalid for everything else; reasons name the
    rule broken, never the document's content. `document` is serialised and parsed again by the hardened
    parser first, whoever parsed it before, and signxml re-parses only with that same parser.
    """
    data = document if isinstance(document, bytes) else etree.tostring(document)
    root = parse_xml(data, max_bytes=max_bytes, max_depth=max_depth)
    trusted = _cert_from_pem(trusted_cert_pem)
    _check_shape(root, trusted)
    try:
        outcome = XMLVerifier().verify(root, x509_cert=trusted, parser=hardened_parser(), expect_config=_VERIFY_CONFIG)
    except InvalidDigest:
        raise SignatureInvalid("the document was changed after it was signed (digest mismatch)") from None
    except InvalidCertificate:
        raise SignatureInvalid("the configured partner certificate is not valid at this time") from None
    except InvalidSignature:
        raise SignatureInvalid("the signature does not verify with the configured partner certificate") from None
    except InvalidInput:
        raise SignatureInvalid("the signature is malformed or uses something not accepted") from None
    except (SignXMLException, ValueError, binascii.Error, etree.LxmlError):
        raise SignatureInvalid("the signature cannot be processed") from None
    # One result, not a list: expect_references is 1 (the list is for configurations expecting several).
    if not isinstance(outcome, VerifyResult):
        raise SignatureInvalid("the signature has more than one reference")
    result, signed = outcome, outcome.signed_xml
    if signed is None or signed.tag != root.tag:
        raise SignatureInvalid("the signed content is not the document element")
    return Verified(
        element=signed,
        cert_sha256=certificate_sha256(trusted),
        cert_subject=trusted.subject.rfc4514_string(),
        signed_sha256=hashlib.sha256(result.signed_data).hexdigest(),
    )


def _check_shape(root: etree._Element, trusted: x509.Certificate) -> None:
    """The rules signxml leaves to its caller, checked first so each refusal says which rule it broke."""
    signatures = root.findall(".//ds:Signature", _DS)
    if root.tag == f"{{{DS_NS}}}Signature":
        raise SignatureInvalid("the document is a bare signature (enveloping), not a signed document")
    if not signatures:
        raise SignatureMissing("the document carries no XML signature")
    if len(signatures) > 1:
        raise SignatureInvalid(f"the document carries {len(signatures)} signatures; exactly one is accepted")
    signature = signatures[0]
    if signature.getparent() is not root:
        raise SignatureInvalid("the signature is not a direct child of the document element (enveloped expected)")
    references = signature.findall("ds:SignedInfo/ds:Reference", _DS)
    if len(references) != 1:
        raise SignatureInvalid(
            f"the signature has {len(references)} references; one over the whole document is expected"
        )
    uri = references[0].get("URI")
    root_id = next((root.get(name) for name in ("Id", "ID", "id") if root.get(name)), None)
    if uri != "" and not (root_id is not None and uri == f"#{root_id}"):
        raise SignatureInvalid("the signature does not cover the whole document (its reference is not the root)")
    for transform in references[0].findall("ds:Transforms/ds:Transform", _DS):
        if transform.get("Algorithm") not in _ACCEPTED_TRANSFORMS:
            raise SignatureInvalid("the signature uses a transform that is not accepted")
    _check_algorithm(signature, "ds:SignedInfo/ds:SignatureMethod", SignatureMethod, ACCEPTED_SIGNATURE_METHODS)
    _check_algorithm(references[0], "ds:DigestMethod", DigestAlgorithm, ACCEPTED_DIGESTS)
    embedded = signature.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _DS)
    if embedded:
        trusted_der = trusted.public_bytes(serialization.Encoding.DER)
        if not any(_der(cert.text) == trusted_der for cert in embedded):
            raise SignatureInvalid("the document was signed with a certificate other than the configured one")


def _check_algorithm(
    node: etree._Element,
    path: str,
    kind: type[SignatureMethod] | type[DigestAlgorithm],
    accepted: frozenset[SignatureMethod] | frozenset[DigestAlgorithm],
) -> None:
    what = "signature" if kind is SignatureMethod else "digest"
    element = node.find(path, _DS)
    uri = element.get("Algorithm") if element is not None else None
    known = {method.value: method.name for method in kind}
    names = ", ".join(sorted(method.name for method in accepted))
    if uri is None:
        raise SignatureInvalid(f"the {what} algorithm is missing")
    if uri not in {method.value for method in accepted}:
        # Named only when it is one signxml knows (its name is ours, not the document's text).
        name = known.get(uri, "an unknown one")
        raise SignatureInvalid(f"the {what} algorithm {name} is not accepted (accepted: {names})")


def _der(text: str | None) -> bytes | None:
    if not text:
        return None
    try:
        return binascii.a2b_base64("".join(text.split()))
    except binascii.Error:
        return None
