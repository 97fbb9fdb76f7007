"""CI sets AL_JAX_REQUIRE_FULL_DATA=1: then a missing AL_JAX_DATA_DIR is an error, so the
full-data tests can never be skipped silently. The tests run JAX as the entry points do
(`al_jax.configure_cpu()` before the backend starts).

Most of a test's time is XLA compiling the same programs again, so the tests (and the
processes they start) share JAX's persistent compilation cache: JAX_TEST_CACHE below,
under AL_JAX_CACHE_DIR (else ~/.cache/al_jax), or AL_JAX_TEST_JAX_CACHE=0 for none. A
cached program is the one XLA would compile (the key holds the program, the flags and
jaxlib's version), and JAX's compile events still fire, so compile counts are unchanged.
"""

import os

import jax
import pytest

import al_jax

al_jax.configure_cpu()

JAX_TEST_CACHE = os.path.join(os.environ.get("AL_JAX_CACHE_DIR") or
                              os.path.expanduser("~/.cache/al_jax"), "jax_test_cache")
if os.environ.get("AL_JAX_TEST_JAX_CACHE", "1") != "0":
  # Environment variables for the processes the tests start, config for this one.
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", JAX_TEST_CACHE)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_configure(config):
  if os.environ.get("AL_JAX_REQUIRE_FULL_DATA") == "1":
    data_dir = os.environ.get("AL_JAX_DATA_DIR")
    if not data_dir or not os.path.isdir(data_dir):
      raise pytest.UsageError(
          "AL_JAX_REQUIRE_FULL_DATA=1 but AL_JAX_DATA_DIR is not a folder; point it at the "
          "folder holding mnist/, fashion_mnist/ and fruits360/")
