"""A software passkey for the demo and the tests: answers WebAuthn as a browser's authenticator.

It holds one P-256 key (ES256) and answers the relying party's options as JSON, as
`navigator.credentials.create` and `.get` would through the page's script
(flows/web/static/passkey.js): "none" attestation, user presence and verification always given.
The tests can make it answer wrongly (another challenge or origin, or another key under the same
credential id). Not shipped: real approvers use their device's or a security key's passkey.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

DEFAULT_ORIGIN = "http://localhost:8686"  # REMEDY_APPROVAL_BASE_URL's default


def b64(data: bytes) -> str:
    """Encode bytes as WebAuthn's JSON carries them (base64url, no padding)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SoftAuthenticator:
    """One passkey on a pretend device: a P-256 key, user verification always given."""

    def __init__(self, rp_id: str = "localhost", origin: str = DEFAULT_ORIGIN) -> None:
        self.rp_id, self.origin = rp_id, origin
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.sign_count = 0

    def _cose(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: x, -3: y})

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        data = {"type": kind, "challenge": challenge, "origin": origin or self.origin}
        return json.dumps({**data, "crossOrigin": False}).encode()

    def create(self, options: str) -> str:
        """Answer registration options (navigator.credentials.create) as JSON."""
        challenge = json.loads(options)["challenge"]
        client_data = self._client_data("webauthn.create", challenge, None)
        auth_data = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([0x45])  # user present, user verified, attested credential data
            + self.sign_count.to_bytes(4, "big")
            + bytes(16)  # AAGUID
            + len(self.credential_id).to_bytes(2, "big")
            + self.credential_id
            + self._cose()
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        response = {
            "clientDataJSON": b64(client_data),
            "attestationObject": b64(attestation),
            "transports": ["internal"],
        }
        return self._credential(response)

    def get(self, options: str, *, challenge: str | None = None, origin: str | None = None) -> str:
        """Answer authentication options (navigator.credentials.get) as JSON."""
        self.sign_count += 1
        asked = challenge or json.loads(options)["challenge"]
        client_data = self._client_data("webauthn.get", asked, origin)
        auth_data = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([0x05])  # user present, user verified
            + self.sign_count.to_bytes(4, "big")
        )
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = self.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        response = {
            "clientDataJSON": b64(client_data),
            "authenticatorData": b64(auth_data),
            "signature": b64(signature),
        }
        return self._credential(response)

    def _credential(self, response: dict[str, Any]) -> str:
        return json.dumps(
            {
                "id": b64(self.credential_id),
                "rawId": b64(self.credential_id),
                "type": "public-key",
                "response": response,
                "clientExtensionResults": {},
            }
        )
