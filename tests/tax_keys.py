"""Keys, certificates and signatures for the tax tests: the land office's and the tax office's identities (made
once per test process: RSA key generation is slow), PEM files of them, and a form signed as the contract says.

The signing here is the test's own use of signxml (not the simulator's helper), so a test that signs with it
and is accepted by the simulator shows that two independent uses of the contract agree.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from lxml import etree
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.algorithms import SignatureConstructionMethod as methods
from signxml.signer import XMLSigner

from adapters.tax.simulator import Identity, generate_identity

EXC_C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0


@functools.cache
def land_office() -> Identity:
    """The land registration office: signs the transfer forms."""
    return generate_identity("Văn phòng Đăng ký đất đai (test)")


@functools.cache
def tax_office() -> Identity:
    """The tax office: signs notices and vouchers."""
    return generate_identity("Chi cục Thuế (test)")


@functools.cache
def stranger() -> Identity:
    """Anyone else: a signature that must not be trusted."""
    return generate_identity("Not a party (test)")


def write_pems(identity: Identity, directory: Path, name: str) -> tuple[Path, Path]:
    """Write `<name>.key.pem` and `<name>.cert.pem` into `directory`; returns (key path, certificate path)."""
    key, cert = directory / f"{name}.key.pem", directory / f"{name}.cert.pem"
    key.write_bytes(identity.key_pem)
    cert.write_bytes(identity.cert_pem)
    return key, cert


def sign(xml: str | bytes, identity: Identity, *, c14n: CanonicalizationMethod = EXC_C14N) -> str:
    """`xml` (one element, a document of its own) signed enveloped with RSA-SHA256 / SHA-256, the reference
    "#Id" when the element has an Id; returned as text without an XML declaration, ready to paste into an
    envelope."""
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    signer = XMLSigner(
        method=methods.enveloped,
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=c14n,
    )
    signed: Any = signer.sign(root, key=identity.key_pem, cert=identity.cert_pem.decode())
    return str(etree.tostring(signed, encoding="unicode"))
