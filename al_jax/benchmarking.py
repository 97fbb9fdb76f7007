"""Throughput figures for `experiments/benchmark.py`: training, pool scoring, one round,
acquisition strategies, and a user's own model (`outside_model`).

Everything runs on synthetic uint8 images of the data set's shape (speed does not
depend on pixel values). Times exclude compilation (measured separately, ahead of
time) and are the median of `repeats` runs after a warm-up call.
"""

import functools
import resource
import statistics
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from al_jax import acquisition as acquisition_lib
from al_jax import bayesian, models, scoring, specs, training
from al_jax import strategies as strategy_lib



def _state(dataset: str, dtype: str = "float32", model: str | None = None
           ) -> training.TrainState:
  """A fresh 10-class `model` (default: the spec's) of `dataset` with the spec's optimiser."""
  spec = specs.get(dataset)
  model = models.create_model(spec, 10, dtype=jnp.dtype(dtype), model=model)
  tx = training.make_optimizer(spec.learning_rate, spec.momentum, spec.weight_decay)
  return training.create_train_state(model, jax.random.key(0), spec.image_shape(32), tx)


def _median_time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # warm-up
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _compile_time(jitted, *args) -> tuple[float, object]:
  t = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return time.perf_counter() - t, compiled


def _flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])
  except Exception:  # not every backend reports costs
    return None


def matmul_flops_per_s(n: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
  """FLOP/s of one large matrix product, the practical peak of this device."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  mm = jax.jit(lambda a: a @ a)
  return 2 * n**3 / _median_time(mm, a, repeats=repeats)


def peak_memory() -> tuple[int, str]:
  """(bytes, source): device peak where the backend reports it, else process peak RSS."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"


def benchmark(dataset: str = "mnist", *, repeats: int = 5, pool_size: int = 20000,
              chunk_size: int = 1000, labeled: int = 1280, dtype: str = "float32",
              train_epochs: int = 1) -> dict:
  """One JSON-able dict of figures for `dataset`'s model on the default device."""
  batch_size = specs.get(dataset).batch_size
  shape = specs.get(dataset).image_shape(32)
  state = _state(dataset, dtype)
  pool_size = training.round_up(pool_size, chunk_size)
  images = jax.random.randint(jax.random.key(1), (pool_size, *shape), 0, 256).astype(jnp.uint8)
  labels = jax.random.randint(jax.random.key(2), (pool_size,), 0, 10)
  mask = jnp.arange(pool_size) < labeled
  key = jax.random.key(3)

  fit = jax.jit(functools.partial(training.fit, epochs=train_epochs, batch_size=batch_size))
  query = jax.jit(functools.partial(scoring.query_top_k, k=100, chunk_size=chunk_size))
  evaluate = jax.jit(functools.partial(training.evaluate, batch_size=chunk_size))
  step = jax.jit(training.train_step)
  forward = jax.jit(lambda s, x: s.logits(x))
  batch = {"image": images[:batch_size], "label": labels[:batch_size]}
  test_images, test_labels = images[:2000], labels[:2000]

  compile_s = {}
  compile_s["fit"], _ = _compile_time(fit, state, images, labels, mask, key)
  compile_s["query"], _ = _compile_time(query, state, images, ~mask, 3, key)
  compile_s["evaluate"], _ = _compile_time(evaluate, state, test_images, test_labels)
  _, step_compiled = _compile_time(step, state, batch, key)
  _, forward_compiled = _compile_time(forward, state, images[:chunk_size])

  steps = train_epochs * -(-labeled // batch_size)
  train_s = _median_time(fit, state, images, labels, mask, key, repeats=repeats)
  score_s = _median_time(query, state, images, ~mask, 3, key, repeats=repeats)

  def one_round(state):
    small_mask = jnp.arange(pool_size) < 500
    trained, _ = fit(state, images, labels, small_mask, key)
    evaluate(trained, test_images, test_labels)
    return query(trained, images, ~small_mask, 3, key)

  round_s = _median_time(one_round, state, repeats=max(1, repeats // 2))
  train_flops = _flops(step_compiled)
  forward_flops = _flops(forward_compiled)
  train_ips = steps * batch_size / train_s
  score_ips = pool_size / score_s
  memory, memory_source = peak_memory()
  peak = matmul_flops_per_s(dtype=jnp.dtype(dtype))
  result = {
      "dataset": dataset, "backend": jax.default_backend(),
      "device": jax.devices()[0].device_kind, "device_count": jax.device_count(),
      "dtype": dtype, "jax_version": jax.__version__,
      "train_batch": batch_size, "train_images_per_s": train_ips,
      "score_chunk": chunk_size, "score_pool": pool_size, "score_images_per_s": score_ips,
      "compile_s": sum(compile_s.values()), "compile_s_by_function": compile_s,
      "round_s": round_s,
      "round_config": {"labeled": 500, "epochs": train_epochs, "pool": pool_size,
                       "test": 2000},
      "peak_memory_bytes": memory, "peak_memory_source": memory_source,
      "matmul_flops_per_s": peak, "repeats": repeats,
  }
  if train_flops and forward_flops:
    result.update({
        "forward_flops_per_image": forward_flops / chunk_size,
        "train_flops_per_image": train_flops / batch_size,
        "train_flops_per_s": train_flops / batch_size * train_ips,
        "score_flops_per_s": forward_flops / chunk_size * score_ips,
    })
    result["train_fraction_of_matmul"] = result["train_flops_per_s"] / peak
    result["score_fraction_of_matmul"] = result["score_flops_per_s"] / peak
  return result


def repeated_pool(source: np.ndarray, size: int, chunk_size: int):
  """Chunks of a pool of `size` images made by repeating `source` [M, H, W, C] (host)."""
  m = source.shape[0]
  for start in range(0, size, chunk_size):
    idx = (np.arange(start, start + chunk_size)) % m
    yield source[idx], np.arange(start, start + chunk_size) < size


def scale(dataset: str, size: int, *, chunk_size: int = 2000, k: int = 100) -> dict:
  """Streams a pool of `size` images from the host through the running top-k."""
  shape = specs.get(dataset).image_shape(32)
  state = _state(dataset)
  source = np.random.default_rng(0).integers(0, 256, (60000, *shape), dtype=np.uint8)
  key = jax.random.key(1)
  # Warm-up (compile) on one chunk.
  jax.block_until_ready(scoring.stream_top_k(
      state, repeated_pool(source, chunk_size, chunk_size), 3, key, k=k))
  t = time.perf_counter()
  scores, indices = scoring.stream_top_k(state, repeated_pool(source, size, chunk_size), 3,
                                         key, k=k)
  jax.block_until_ready(indices)
  elapsed = time.perf_counter() - t
  memory, memory_source = peak_memory()
  return {"dataset": dataset, "pool_size": size, "chunk_size": chunk_size, "seconds": elapsed,
          "images_per_s": size / elapsed, "peak_memory_bytes": memory,
          "peak_memory_source": memory_source, "backend": jax.default_backend(),
          "top_score": float(scores[0])}


def _timed_compiled(jitted, *args, repeats: int) -> tuple[float, float, object]:
  """(compile seconds, median run seconds, compiled): compiled ahead of time, so no
  warm-up call is needed (a BALD pass over 60,000 images takes minutes on CPU)."""
  compile_s, compiled = _compile_time(jitted, *args)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t)
  return compile_s, statistics.median(times), compiled


def benchmark_rows(k: int, chunk_size: int, mc_samples: int) -> dict:
  """{row: strategy} of every registered strategy with `benchmark=True`: NAME, or
  NAME_k<K> with mc_samples = K for one that reads posterior samples."""
  rows = {}
  for name in strategy_lib.names():
    spec = strategy_lib.get(name)
    if spec.benchmark:
      samples = spec.needs == "samples"
      rows[f"{name}_k{mc_samples}" if samples else name] = acquisition_lib.make(
          name, k=k, chunk_size=chunk_size, **({"mc_samples": mc_samples} if samples else {}))
  return rows


def acquisition(dataset: str = "mnist", *, pool_size: int = 60000, chunk_size: int = 1000,
                k: int = 10, mc_samples: tuple[int, ...] = (20, 100), ensemble_size: int = 5,
                labeled: int = 1280, repeats: int = 1, model: str | None = None) -> dict:
  """Seconds to choose k images from a pool of `pool_size` synthetic images, `labeled` of
  them labeled, with each strategy and an untrained `model` (default: the spec's); BALD's
  achieved FLOP/s against a matmul's; an ensemble's fit against `ensemble_size` separate
  fits.

  Strategies: BALD with K MC-dropout passes for each K; then every registered strategy
  with `benchmark=True` (`benchmark_rows`; built in: entropy, BALD, BatchBALD and
  stochastic BALD at the largest K, core-set, BADGE, TypiClust); BALD over a deep
  ensemble's members.
  """
  spec = specs.get(dataset)
  state = _state(dataset, model=model)
  shape = spec.image_shape(32)
  pool_size = training.round_up(pool_size, chunk_size)
  images = jax.random.randint(jax.random.key(1), (pool_size, *shape), 0, 256).astype(jnp.uint8)
  available = jnp.arange(pool_size) >= labeled
  key = jax.random.key(2)
  big_k = max(mc_samples)
  strategies = {f"bald_k{m}": acquisition_lib.make("bald", k=k, chunk_size=chunk_size,
                                                   mc_samples=m)
                for m in mc_samples}  # BALD at every K: the FLOP/s reference below
  strategies.update(benchmark_rows(k, chunk_size, big_k))
  seconds, compile_s = {}, {}
  for name, strategy in strategies.items():
    compile_s[name], seconds[name], _ = _timed_compiled(
        jax.jit(strategy), state, images, available, key, ~available, repeats=repeats)

  tx = training.make_optimizer(spec.learning_rate, spec.momentum, spec.weight_decay)
  ensemble = jax.jit(training.create_train_state, static_argnums=(0, 2, 3, 4))(
      models.create_model(spec, 10, model=model), jax.random.key(0), shape, tx,
      ensemble_size)
  name = f"ensemble{ensemble_size}_bald"
  compile_s[name], seconds[name], _ = _timed_compiled(
      jax.jit(acquisition_lib.make("bald", k=k, chunk_size=chunk_size)), ensemble, images,
      available, key, ~available, repeats=repeats)

  # BALD's FLOPs: one chunk's compiled MC passes and scorer, times the chunks.
  bald_chunk = jax.jit(lambda s, x, key: bayesian.bald(scoring.mc_log_probs(s, x, key, big_k)))
  chunk_flops = _flops(_compile_time(bald_chunk, state, images[:chunk_size], key)[1])
  peak = matmul_flops_per_s()

  # An ensemble's fit (one vmapped program) against its members fitted one by one.
  labels = jax.random.randint(jax.random.key(3), (pool_size,), 0, 10)
  mask = jnp.arange(pool_size) < labeled
  fit = jax.jit(functools.partial(training.fit, epochs=1, batch_size=spec.batch_size))
  _, ensemble_fit_s, _ = _timed_compiled(fit, ensemble, images, labels, mask, key,
                                         repeats=max(repeats, 3))
  _, single_fit_s, _ = _timed_compiled(fit, state, images, labels, mask, key,
                                       repeats=max(repeats, 3))
  result = {
      "dataset": dataset, "model": model or spec.model, "pool_size": pool_size, "k": k,
      "chunk_size": chunk_size, "labeled": labeled, "mc_samples": list(mc_samples),
      "backend": jax.default_backend(),
      "device": jax.devices()[0].device_kind, "jax_version": jax.__version__,
      "seconds": seconds, "compile_s": compile_s,
      "relative_to_entropy": {n: s / seconds["entropy"] for n, s in seconds.items()},
      f"batchbald_over_bald_k{big_k}": seconds[f"batchbald_k{big_k}"] / seconds[f"bald_k{big_k}"],
      "matmul_flops_per_s": peak,
      "ensemble_size": ensemble_size, "ensemble_fit_s": ensemble_fit_s,
      "single_fit_s": single_fit_s,
      "ensemble_fit_over_separate_fits": ensemble_fit_s / (ensemble_size * single_fit_s),
  }
  if chunk_flops:
    flops = chunk_flops * pool_size / chunk_size
    result[f"bald_k{big_k}_flops"] = flops
    result[f"bald_k{big_k}_flops_per_s"] = flops / seconds[f"bald_k{big_k}"]
    result[f"bald_k{big_k}_fraction_of_matmul"] = flops / seconds[f"bald_k{big_k}"] / peak
  return result


class ExampleCNN(nn.Module):
  """A user's model in the shape of Flax's MNIST example (Conv32-BN-ReLU-Dropout-AvgPool,
  Conv64-BN-ReLU-AvgPool, Dense 256-ReLU-Dropout, Dense C; 3x3 SAME convolutions) on
  float images in [0, 1]; `conv` is the convolution its nn.Conv layers use."""
  num_classes: int = 10
  conv: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    extra = {} if self.conv is None else {"conv_general_dilated": self.conv}
    pool = lambda x: nn.avg_pool(x, (2, 2), (2, 2))
    norm = lambda x: nn.BatchNorm(use_running_average=not train)(x)
    x = x.astype(jnp.float32) / 255.0
    x = nn.Dropout(0.025, deterministic=not train)(nn.relu(norm(nn.Conv(32, (3, 3), **extra)(x))))
    x = pool(nn.relu(norm(nn.Conv(64, (3, 3), **extra)(pool(x)))))
    x = nn.relu(nn.Dense(256)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes)(nn.Dropout(0.025, deterministic=not train)(x))


def outside_model(steps: int = 100, batch_size: int = 32, runs: int = 3,
                  repeats: int = 3) -> dict:
  """Seconds to train a user's CNN (`ExampleCNN`) for `steps` SGD steps, each way
  alternated `repeats` times (medians): its own jitted step in a Python loop, al_jax's
  `fit` (one compiled loop), and `runs` models in one program (vmap and lax.map), each
  with XLA's convolution and with `al_jax.convolution.conv_general_dilated`."""
  from al_jax.convolution import conv_general_dilated
  images = jax.random.randint(jax.random.key(1), (steps * batch_size, 28, 28, 1), 0,
                              256).astype(jnp.uint8)
  labels = jax.random.randint(jax.random.key(2), (steps * batch_size,), 0, 10)
  mask = jnp.ones(labels.shape, bool)
  tx = training.make_optimizer(0.01, 0.9, 0.0)
  keys = jax.random.split(jax.random.key(3), runs)
  ways = {}
  for conv_name, conv in (("xla_conv", None), ("al_jax_conv", conv_general_dilated)):
    model = ExampleCNN(conv=conv)
    state = training.create_train_state(model, jax.random.key(0), (28, 28, 1), tx)
    step = jax.jit(training.train_step)

    def own_loop(state, step=step):
      for i in range(steps):
        batch = {"image": images[i * batch_size:(i + 1) * batch_size],
                 "label": labels[i * batch_size:(i + 1) * batch_size]}
        state, _ = step(state, batch, jax.random.key(i))
      return state.params

    fit = jax.jit(lambda s, k: training.fit(s, images, labels, mask, k, epochs=1,
                                            batch_size=batch_size)[0].params)
    ways[f"own_jitted_step_{conv_name}"] = (own_loop, state)
    ways[f"fit_{conv_name}"] = (lambda s, fit=fit: fit(s, keys[0]), state)
    stacked = jax.vmap(lambda k: training.create_train_state(model, k, (28, 28, 1), tx))(keys)
    vmapped = jax.jit(jax.vmap(lambda s, k: training.fit(
        s, images, labels, mask, k, epochs=1, batch_size=batch_size)[0].params))
    mapped = jax.jit(lambda s, ks: lax.map(lambda a: training.fit(
        a[0], images, labels, mask, a[1], epochs=1, batch_size=batch_size)[0].params,
        (s, ks)))
    ways[f"{runs}_runs_vmap_{conv_name}"] = (lambda s, f=vmapped: f(s, keys), stacked)
    ways[f"{runs}_runs_lax_map_{conv_name}"] = (lambda s, f=mapped: f(s, keys), stacked)
  for fn, state in ways.values():  # compile (and warm up) every way first
    jax.block_until_ready(fn(state))
  times = {name: [] for name in ways}
  for _ in range(repeats):  # alternated, so a change in load touches every way alike
    for name, (fn, state) in ways.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(state))
      times[name].append(time.perf_counter() - start)
  seconds = {name: statistics.median(t) for name, t in times.items()}
  return {"steps": steps, "batch_size": batch_size, "runs": runs, "repeats": repeats,
          "backend": jax.default_backend(), "seconds": seconds,
          "fit_over_own_step": {c: seconds[f"fit_{c}"] / seconds[f"own_jitted_step_{c}"]
                                for c in ("xla_conv", "al_jax_conv")},
          "vmap_over_lax_map": {c: seconds[f"{runs}_runs_vmap_{c}"] /
                                seconds[f"{runs}_runs_lax_map_{c}"]
                                for c in ("xla_conv", "al_jax_conv")}}
