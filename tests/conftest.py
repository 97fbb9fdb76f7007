"""CI sets AL_JAX_REQUIRE_FULL_DATA=1: then a missing AL_JAX_DATA_DIR is an error, so the
full-data tests can never be skipped silently."""

import os

import pytest


def pytest_configure(config):
  if os.environ.get("AL_JAX_REQUIRE_FULL_DATA") == "1":
    data_dir = os.environ.get("AL_JAX_DATA_DIR")
    if not data_dir or not os.path.isdir(data_dir):
      raise pytest.UsageError(
          "AL_JAX_REQUIRE_FULL_DATA=1 but AL_JAX_DATA_DIR is not a folder; point it at the "
          "folder holding mnist/, fashion_mnist/ and fruits360/")
