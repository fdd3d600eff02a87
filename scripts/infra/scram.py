"""SCRAM-SHA-256 passwords as PostgreSQL keeps them: SASLprep, and the verifier that
ALTER ROLE ... PASSWORD takes instead of the password (so no statement or log holds it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def saslprep(password: str) -> str:
    """SASLprep (RFC 4013) as PostgreSQL and libpq apply it to SCRAM passwords.

    Non-ASCII spaces become spaces, "mapped to nothing" characters go, then NFKC (a "fi"
    ligature logs in as "fi", a fullwidth letter as its ASCII one). Like PostgreSQL, a
    password SASLprep prohibits (control or unassigned characters, bad bidirectional text)
    is used as it is.
    """
    import stringprep
    import unicodedata

    if password.isascii():
        return password  # SASLprep changes no printable ASCII; ASCII controls: used as is
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if any(check(c) for c in normal for check in prohibited):
        return password
    right_to_left = [stringprep.in_table_d1(c) for c in normal]
    if any(right_to_left) and (
        not (right_to_left[0] and right_to_left[-1])
        or any(stringprep.in_table_d2(c) for c in normal)
    ):
        return password
    return normal


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (what ALTER ROLE ...
    PASSWORD takes instead of the password itself, so no statement or log holds it)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
