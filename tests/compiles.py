"""Counts XLA compilations by function name, through JAX's own monitoring events (what
`jax_log_compiles` logs), so tests check compile counts without counters in the code.

    with compiles.counted() as seen:
      ...
    assert seen["jit(step)"] == 1
"""

import collections
import contextlib

import jax


BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def counted():
  """Yields a Counter {function name, e.g. "jit(step)": compilations inside the block}."""
  seen = collections.Counter()

  def listen(event, duration, fun_name=None, **kwargs):
    del duration, kwargs
    if event == BACKEND_COMPILE:
      seen[fun_name] += 1
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield seen
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
