"""Who sends a request: the actor comes from the credential, never from the body.

Two kinds of credential, both as ``Authorization: Bearer <credential>``:

* a JWT, verified with PyJWT against the configured key (a shared secret for HS256, a
  PEM public key for RS256/ES256...), a key file or a JWKS file (the key picked by the
  token's ``kid``); its claims are mapped onto the actor's id, roles and unit by the
  settings (``actor_claim``, ``roles_claim``, ``unit_claim``; a dotted path reaches into
  a nested claim such as ``realm_access.roles``). ``exp`` is required.
* an API token for a service: the settings keep its SHA-256 and the actor it stands for
  (:func:`hash_token` gives the digest to put there).

A credential that is missing, malformed, expired or wrongly signed is refused with 401;
the reason given to the client says which of those it was, nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..settings import HttpJwtSettings, HttpTokenSettings
from ..types import Actor

__all__ = ["AuthError", "Authenticator", "hash_token"]


def hash_token(token: str) -> str:
    """The SHA-256 (hex) of an API token, as the settings keep it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AuthError(Exception):
    """The request carries no valid credential (HTTP 401)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _roles(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(r for r in value.replace(",", " ").split() if r)
    if isinstance(value, list | tuple):
        return frozenset(str(r) for r in value if isinstance(r, str) and r)
    raise AuthError("the token's roles claim is neither a list nor a string")


class Authenticator:
    """Turns an ``Authorization`` header into an :class:`Actor`, or raises :class:`AuthError`."""

    def __init__(self, jwt: HttpJwtSettings | None = None,
                 tokens: tuple[HttpTokenSettings, ...] | list[HttpTokenSettings] = (), *,
                 base_dir: Path | None = None) -> None:
        self._jwt = jwt
        self._tokens: list[tuple[bytes, Actor]] = []
        for t in tokens:
            self._tokens.append((bytes.fromhex(t.sha256), Actor.parse(t.actor)))
        self._key: Any = None
        self._jwks: Any = None
        if jwt is not None:
            self._load_keys(jwt, base_dir or Path("."))

    @property
    def configured(self) -> bool:
        """Whether any credential can be accepted at all."""
        return self._jwt is not None or bool(self._tokens)

    def _load_keys(self, jwt: HttpJwtSettings, base: Path) -> None:
        import jwt as pyjwt

        def path(p: str) -> Path:
            q = Path(p)
            return q if q.is_absolute() else base / q

        if jwt.jwks_file:
            self._jwks = pyjwt.PyJWKSet.from_json(path(jwt.jwks_file).read_text(encoding="utf-8"))
        elif jwt.key_file:
            self._key = path(jwt.key_file).read_text(encoding="utf-8")
        elif jwt.key:
            self._key = jwt.key
        else:
            raise ValueError("http.jwt needs key, key_file or jwks_file")

    def actor(self, authorization: str | None) -> Actor:
        """The actor a request's ``Authorization`` header names."""
        if not authorization:
            raise AuthError("no credential: send Authorization: Bearer <token>")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        if len(credential) > 16_384:
            raise AuthError("the credential is too long")
        if credential.count(".") == 2 and self._jwt is not None:
            return self._from_jwt(credential)
        return self._from_token(credential)

    def _from_token(self, token: str) -> Actor:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Actor | None = None
        for known, actor in self._tokens:
            if hmac.compare_digest(known, digest):
                found = actor
        if found is None:
            raise AuthError("unknown API token")
        return found

    def _from_jwt(self, token: str) -> Actor:
        import jwt as pyjwt

        cfg = self._jwt
        assert cfg is not None
        try:
            key: Any = self._key
            if self._jwks is not None:
                kid = pyjwt.get_unverified_header(token).get("kid")
                matching = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
                if not matching:
                    raise AuthError("the token's key (kid) is not in the JWKS")
                key = matching[0]
            claims = pyjwt.decode(
                token, key, algorithms=list(cfg.algorithms), issuer=cfg.issuer,
                audience=cfg.audience, leeway=cfg.leeway_seconds,
                options={"require": ["exp"], "verify_aud": cfg.audience is not None})
        except pyjwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except pyjwt.InvalidSignatureError:
            raise AuthError("the token's signature does not verify") from None
        except pyjwt.PyJWTError as e:
            raise AuthError(f"the token is not valid ({type(e).__name__})") from None
        except (ValueError, TypeError, KeyError, json.JSONDecodeError):
            raise AuthError("the token is malformed") from None
        ident = _claim(claims, cfg.actor_claim)
        if not isinstance(ident, str) or not ident or len(ident) > 200:
            raise AuthError(f"the token has no usable {cfg.actor_claim!r} claim")
        unit = _claim(claims, cfg.unit_claim)
        if unit is not None and not isinstance(unit, str):
            raise AuthError(f"the token's {cfg.unit_claim!r} claim is not a string")
        return Actor(ident, _roles(_claim(claims, cfg.roles_claim)), unit or None)
