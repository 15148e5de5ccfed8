"""Write tokens: proof that a STORE / ADD_PROVIDER comes from the IP address it claims.

As BitTorrent's announce token: ``token = HMAC-SHA256(secret, packed source IP)[:16]``. The secret
rotates every ``rotation`` seconds; tokens made with the current or the previous secret are
accepted, so a token is valid for between one and two rotations. An attacker who forges its
source address never sees the reply that carries the token, so it cannot register anything.
Sans-IO: the caller passes ``now`` and may inject the random source (secrets must be
unpredictable: the default is :class:`random.SystemRandom`).
"""

from __future__ import annotations

import hmac
import random

from .contact import pack_ip

TOKEN_BYTES = 16
"""128 bits: unguessable for the token's short lifetime, and small on the wire."""
SECRET_BYTES = 32
"""HMAC-SHA256 key size."""


class TokenManager:
    """Issues and checks write tokens bound to an IP address."""

    def __init__(self, rotation: float, now: float, *, rng: random.Random | None = None) -> None:
        self._rotation = rotation
        self._rng = rng or random.SystemRandom()
        self._current = self._rng.randbytes(SECRET_BYTES)
        self._previous = self._rng.randbytes(SECRET_BYTES)
        self._rotated_at = now

    def _maybe_rotate(self, now: float) -> None:
        elapsed = now - self._rotated_at
        if elapsed >= 2 * self._rotation:
            # Idle for two periods or more: every outstanding token has expired.
            self._previous = self._rng.randbytes(SECRET_BYTES)
            self._current = self._rng.randbytes(SECRET_BYTES)
            self._rotated_at = now
        elif elapsed >= self._rotation:
            self._previous = self._current
            self._current = self._rng.randbytes(SECRET_BYTES)
            self._rotated_at += self._rotation

    @staticmethod
    def _mac(secret: bytes, host: str) -> bytes:
        # hmac.digest: the one-call form, computed in C without an HMAC object (same bytes).
        return hmac.digest(secret, pack_ip(host), "sha256")[:TOKEN_BYTES]

    def issue(self, host: str, now: float) -> bytes:
        """The token for IP ``host`` (must be an IP literal)."""
        self._maybe_rotate(now)
        return self._mac(self._current, host)

    def check(self, host: str, token: bytes, now: float) -> bool:
        """Whether ``token`` was issued to ``host`` under the current or previous secret."""
        self._maybe_rotate(now)
        if len(token) != TOKEN_BYTES:
            return False
        return hmac.compare_digest(token, self._mac(self._current, host)) or hmac.compare_digest(
            token, self._mac(self._previous, host)
        )
