"""Fixtures shared by the integration test modules (the services ones live in tests/conftest.py)."""

from tests.integration.worker_world import minilm_world, tiny_model, world  # noqa: F401 - pytest fixtures
