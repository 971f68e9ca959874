"""Whole-system scenarios share the realtime tests' fixtures (channel layers, modes, connection hygiene)."""

from tests.realtime.conftest import (  # noqa: F401 - fixtures and the collection hook, used by name
    _close_sync_thread_connections,
    _fast_password_hasher,
    layer,
    pytest_collection_modifyitems,
    realtime_mode,
)
