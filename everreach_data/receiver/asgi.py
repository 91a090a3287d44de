"""The receiver as an ASGI factory, for process managers: ``uvicorn --factory
everreach_data.receiver.asgi:create`` or ``everreach-data serve --workers N``. Each worker process builds
its own app (its own connection pool) from the environment."""

from starlette.applications import Starlette

from everreach_data.config import load_settings
from everreach_data.db.connection import app_database_url
from everreach_data.receiver.app import create_app


def create() -> Starlette:
    settings = load_settings()
    return create_app(settings, app_database_url(settings))
