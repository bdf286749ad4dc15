"""casework over HTTP: a REST API with OpenAPI, authentication and problem details.

Needs the ``server`` extra (``pip install 'casework[server]'``: FastAPI, uvicorn, PyJWT,
prometheus-client, opentelemetry-api)::

    from casework import Engine
    from casework.http import create_app
    from casework.settings import HttpSettings

    engine = Engine.from_settings("config/casework.toml")
    app = create_app(engine, HttpSettings(tokens=[...]))     # an ASGI app to mount or serve

``casework serve-http`` runs it with uvicorn. See :mod:`casework.http.app` for the
resources, :mod:`casework.http.auth` for credentials, :mod:`casework.http.problems` for
the error mapping and :mod:`casework.http.notices` for webhooks.
"""

from ..errors import MissingExtra

try:
    import fastapi  # noqa: F401
    import jwt  # noqa: F401
    import prometheus_client  # noqa: F401
except ImportError as e:  # pragma: no cover - without the extra
    raise MissingExtra("the HTTP service", "server", e.name or "fastapi") from None

from ..settings import HttpJwtSettings, HttpSettings, HttpTokenSettings, HttpWebhookSettings
from .app import create_app
from .auth import Authenticator, AuthError, hash_token
from .notices import sign, verify_signature

__all__ = [
    "AuthError", "Authenticator", "HttpJwtSettings", "HttpSettings", "HttpTokenSettings",
    "HttpWebhookSettings", "create_app", "hash_token", "sign", "verify_signature",
]
