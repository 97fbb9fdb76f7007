"""CI sets AL_JAX_REQUIRE_FULL_DATA=1: then a missing AL_JAX_DATA_DIR is an error, so the
full-data tests can never be skipped silently. The tests run JAX as the entry points do
(`al_jax.configure_cpu()` before the backend starts)."""

import os

import pytest

import al_jax

al_jax.configure_cpu()


def pytest_configure(config):
  if os.environ.get("AL_JAX_REQUIRE_FULL_DATA") == "1":
    data_dir = os.environ.get("AL_JAX_DATA_DIR")
    if not data_dir or not os.path.isdir(data_dir):
      raise pytest.UsageError(
          "AL_JAX_REQUIRE_FULL_DATA=1 but AL_JAX_DATA_DIR is not a folder; point it at the "
          "folder holding mnist/, fashion_mnist/ and fruits360/")
