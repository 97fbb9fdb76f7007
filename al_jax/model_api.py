"""The model interface: what the strategies, `fit` and the round loop ask of a model.

A model here is an adapter over a Flax module with these pure functions of its
variables {"params": P, "batch_stats": S} (S may be {}); images are [B, H, W, C] as the
data set holds them (uint8), or float32 feature vectors [B, D] (`models.input_dtype`),
each adapter turning them into the module's inputs (vectors go in as they are):

  init(key, image_shape) -> variables                     fresh variables
  logits(variables, images) -> [B, C]                     inference
  train_logits(variables, images, key) -> (logits, S')    training (dropout from key)
  trunk(variables, images) -> features                    deterministic, once per chunk
  stochastic_head(variables, features, key) -> [B, C]     one Monte Carlo dropout pass
  penultimate(variables, images) -> (logits [B, C], embeddings [B, D])
  missing(need, variables) -> None | why not               "samples" or "embeddings"

Three adapters: `TrunkHeadModel` (al_jax's own CNNs, `models.TrunkHeadCNN`),
`NnxModel` (a user's Flax NNX module: the usual case) and `LinenModel` (a user's Linen
module mapping images to logits); `model_registry.create` builds the right one by name. A user's model needs only to map
images to logits; the rest is detected:

* stochastic passes ("samples": bald, batchbald, ...): the module's own dropout, run at
  inference with batch norm on its running averages (NNX: every layer's `deterministic`
  off, `use_running_average` on; Linen: `__call__(x, train=True)` on a module without
  batch_stats). Every image of a pass must see the same mask (BatchBALD's samples are
  consistent across the pool): an NNX model's `nnx.Dropout` layers share their mask over
  the batch axis in these passes (training keeps per-image masks), and `check` runs one
  pass on identical images and refuses, in one line, a model whose rows still differ
  (a dropout of its own drawing per-image masks);
* embeddings ("embeddings": coreset, badge, typiclust): the module's `embed(x) -> [B, D]`
  method if it has one, else the input of the last `nnx.Linear` / `nn.Dense` it calls;
* a deterministic trunk: NNX modules with `trunk(x)` and `head(features)` methods run
  the trunk once before the K passes (an optimisation; the default is the whole model
  K times).

The state (`training.TrainState`) holds the adapter as `state.model`; `TrainState.logits`
calls its logits / train_logits, the strategies (`al_jax.scoring`) `stochastic_log_probs`
and `penultimate` below, so no strategy knows a module's keyword arguments. `check`
tries a model once, on the host, before a job starts (`experiment.check_model`).
"""

import contextvars
import dataclasses
import inspect
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from al_jax import convolution
from al_jax.models import TrunkHeadCNN, input_dtype, normalize

NEEDS_OF_MODEL = ("samples", "embeddings")


class ModelError(ValueError):
  """A model that cannot do what is asked of it; the message is one line."""


class Model(Protocol):
  """What an adapter gives (see the module docstring); variables = {"params",
  "batch_stats"}, images uint8 [B, H, W, C]."""
  checks_masks: bool  # whether `check` must try its Monte Carlo masks (not declared)

  def init(self, key: jax.Array, image_shape: tuple[int, ...]) -> dict: ...
  def logits(self, variables: dict, images: jax.Array) -> jax.Array: ...
  def train_logits(self, variables: dict, images: jax.Array, key: jax.Array
                   ) -> tuple[jax.Array, Any]: ...
  def trunk(self, variables: dict, images: jax.Array) -> Any: ...
  def stochastic_head(self, variables: dict, features: Any, key: jax.Array) -> jax.Array: ...
  def penultimate(self, variables: dict, images: jax.Array) -> tuple[jax.Array, jax.Array]: ...
  def missing(self, need: str, variables: dict) -> str | None: ...


def _inputs(images: jax.Array, mean, std) -> jax.Array:
  """uint8 images -> float32 (x/255 - mean) / std (None: the images as they are);
  float vectors as they are."""
  return images if mean is None else normalize(images, mean, std)


@dataclasses.dataclass(frozen=True)
class TrunkHeadModel:
  """al_jax's own CNNs (`models.TrunkHeadCNN`): the trunk / head split, Monte Carlo
  dropout with one mask per pass and the penultimate output are declared by the
  module's `stage`, `mc_dropout` and `with_penultimate` arguments."""
  module: TrunkHeadCNN

  @property
  def apply(self):
    return self.module.apply

  def init(self, key: jax.Array, image_shape: tuple[int, ...]) -> dict:
    variables = self.module.init(key, jnp.zeros((1, *image_shape), input_dtype(image_shape)),
                                 train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

  def logits(self, variables, images):
    return self.module.apply(variables, images, train=False)

  def train_logits(self, variables, images, key):
    logits, updates = self.module.apply(variables, images, train=True,
                                        rngs={"dropout": key}, mutable=["batch_stats"])
    return logits, updates.get("batch_stats", {})

  def trunk(self, variables, images):
    return self.module.apply(variables, images, train=False, stage="trunk")

  def stochastic_head(self, variables, features, key):
    return self.module.apply(variables, features, train=False, stage="head",
                             mc_dropout=True, rngs={"dropout": key})

  def penultimate(self, variables, images):
    return self.module.apply(variables, images, train=False, with_penultimate=True)

  def missing(self, need, variables):
    return None

  checks_masks = False  # one mask per pass by construction (`models._dropout`)


_SEEN: contextvars.ContextVar = contextvars.ContextVar("al_jax_dense_inputs")


def _record_dense_inputs(next_fun, args, kwargs, context):
  """A Linen interceptor keeping the input of every nn.Dense call, in call order."""
  if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
    _SEEN.get().append(args[0])
  return next_fun(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class LinenModel:
  """A user's Linen module: `__call__(x)` or `__call__(x, train)` -> logits [B, C];
  x the images normalised by (mean, std) (None: uint8 as they are)."""
  module: nn.Module
  mean: tuple[float, ...] | None = None
  std: tuple[float, ...] | None = None

  @property
  def apply(self):
    return self.module.apply

  @property
  def _takes_train(self) -> bool:
    return "train" in inspect.signature(self.module.__call__).parameters

  def _call(self, variables, images, train: bool, **kwargs):
    flag = {"train": train} if self._takes_train else {}
    return self.module.apply(_linen_variables(variables), _inputs(images, self.mean, self.std),
                             **flag, **kwargs)

  def init(self, key, image_shape):
    x = _inputs(jnp.zeros((1, *image_shape), input_dtype(image_shape)), self.mean, self.std)
    train = {"train": False} if self._takes_train else {}
    variables = self.module.init({"params": key, "dropout": key}, x, **train)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

  def logits(self, variables, images):
    return self._call(variables, images, train=False)

  def train_logits(self, variables, images, key):
    if not variables["batch_stats"]:
      return self._call(variables, images, train=True, rngs={"dropout": key}), {}
    logits, updates = self._call(variables, images, train=True, rngs={"dropout": key},
                                 mutable=["batch_stats"])
    return logits, updates["batch_stats"]

  def trunk(self, variables, images):
    return images

  def stochastic_head(self, variables, images, key):
    return self._call(variables, images, train=True, rngs={"dropout": key})

  def penultimate(self, variables, images):
    if hasattr(self.module, "embed"):
      return self.logits(variables, images), self.module.apply(
          _linen_variables(variables), _inputs(images, self.mean, self.std), method="embed")
    token = _SEEN.set([])
    try:
      with nn.intercept_methods(_record_dense_inputs):
        logits = self.logits(variables, images)
      seen = _SEEN.get()
    finally:
      _SEEN.reset(token)
    if not seen:
      raise ModelError(f"{type(self.module).__name__} calls no nn.Dense layer; give it an "
                       "embed(x) -> [B, D] method for coreset, badge and typiclust")
    return logits, seen[-1].reshape(seen[-1].shape[0], -1)

  def missing(self, need, variables):
    name = type(self.module).__name__
    if need == "samples" and not self._takes_train:
      return (f"{name}.__call__ takes no `train` argument, so al_jax cannot switch its "
              "dropout on for Monte Carlo passes; add one, or use a Flax NNX module")
    if need == "samples" and variables["batch_stats"]:
      return (f"{name} has batch norm, which a Linen module runs on batch statistics "
              "whenever dropout is on; use a Flax NNX module for Monte Carlo passes")
    return None

  checks_masks = True


def _linen_variables(variables: dict) -> dict:
  return {k: v for k, v in variables.items() if k == "params" or v}


def _flat(state: nnx.State) -> dict[str, Any]:
  """An NNX State as a flat {"path/to/leaf": array} dict (a plain pytree for optax and
  Orbax)."""
  return {"/".join(map(str, path)): var.get_value() for path, var in nnx.to_flat_state(state)}


class _RecordingLinear(nnx.Linear):
  """nnx.Linear that keeps its input (`_SEEN`): the last one called gives embeddings."""

  def __call__(self, inputs):
    _SEEN.get().append(inputs)
    return super().__call__(inputs)


class NnxModel:
  """A user's Flax NNX module, built as `factory(rngs) -> module` (e.g.
  `lambda rngs: Net(num_classes=10, rngs=rngs)`), `__call__(x) -> logits [B, C]` on
  images normalised by (mean, std) (None: uint8 as they are).

  The module is split once (abstractly) into graphdefs for training (`train()`),
  inference (`eval()`) and Monte Carlo passes (dropout on, batch norm on running
  averages); its nnx.Param leaves are the state's params, its other variables but the
  RNG state (batch norm statistics) its batch_stats, both flat dicts. Randomness comes
  from the key of each call: the module's RNG streams are reset from it, so every call
  is a pure function of (variables, images, key). Its nnx.Conv layers that use XLA's
  convolution use `al_jax.convolution.conv_general_dilated` instead (the same values;
  on CPU about 10x faster to train inside `fit`, docs/BENCHMARKS.md)."""

  checks_masks = True

  def __init__(self, factory, mean=None, std=None, name: str | None = None):
    self.factory, self.mean, self.std = factory, mean, std
    abstract = nnx.eval_shape(lambda: factory(nnx.Rngs(0)))
    if not isinstance(abstract, nnx.Module):
      raise ModelError(f"the model factory gave a {type(abstract).__name__}, not an "
                       "nnx.Module")
    self.name = name or type(abstract).__name__
    self._has_dropout = any(hasattr(m, "deterministic") for _, m in nnx.iter_modules(abstract))
    self._has_trunk = hasattr(abstract, "trunk") and hasattr(abstract, "head")
    self._has_embed = hasattr(abstract, "embed")
    views = {"train": dict(deterministic=False, use_running_average=False),
             "eval": dict(deterministic=True, use_running_average=True),
             "mc": dict(deterministic=False, use_running_average=True)}
    self._graphdefs = {}
    for mode, attributes in views.items():
      view = nnx.view(abstract, raise_if_not_found=False, **attributes)
      for _, m in nnx.iter_modules(view):  # XLA:CPU's slow convolution gradient, avoided
        if isinstance(m, nnx.Conv) and m.conv_general_dilated is lax.conv_general_dilated:
          m.conv_general_dilated = convolution.conv_general_dilated
      if mode == "mc":  # one mask per pass: every nnx.Dropout shares it over axis 0
        for _, m in nnx.iter_modules(view):
          if isinstance(m, nnx.Dropout):
            m.broadcast_dims = tuple(sorted({0, *m.broadcast_dims}))
      self._graphdefs[mode], params, rng, rest = nnx.split(view, nnx.Param, nnx.RngState, ...)
    self._templates = {"params": nnx.to_flat_state(params), "rng": nnx.to_flat_state(rng),
                       "rest": nnx.to_flat_state(rest)}

  def _state(self, part: str, flat: dict[str, Any]) -> nnx.State:
    return nnx.from_flat_state([(path, var.replace(flat["/".join(map(str, path))]))
                                for path, var in self._templates[part]])

  def _rng_state(self, key: jax.Array) -> nnx.State:
    out = []
    for i, (path, var) in enumerate(self._templates["rng"]):
      if jax.dtypes.issubdtype(var.get_value().dtype, jax.dtypes.prng_key):
        out.append((path, var.replace(jax.random.fold_in(key, i))))
      else:
        out.append((path, var.replace(jnp.zeros(var.get_value().shape, var.get_value().dtype))))
    return nnx.from_flat_state(out)

  def _merge(self, mode: str, variables: dict, key: jax.Array | None = None) -> nnx.Module:
    key = jax.random.key(0) if key is None else key
    return nnx.merge(self._graphdefs[mode], self._state("params", variables["params"]),
                     self._rng_state(key), self._state("rest", variables["batch_stats"]))

  def _x(self, images):
    return _inputs(images, self.mean, self.std)

  def init(self, key, image_shape):
    _, params, _, rest = nnx.split(self.factory(nnx.Rngs(key)), nnx.Param, nnx.RngState, ...)
    return {"params": _flat(params), "batch_stats": _flat(rest)}

  def logits(self, variables, images):
    return self._merge("eval", variables)(self._x(images))

  def train_logits(self, variables, images, key):
    module = self._merge("train", variables, key)
    logits = module(self._x(images))
    _, _, _, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
    return logits, _flat(rest)

  def trunk(self, variables, images):
    if self._has_trunk:
      return self._merge("eval", variables).trunk(self._x(images))
    return images

  def stochastic_head(self, variables, features, key):
    module = self._merge("mc", variables, key)
    return module.head(features) if self._has_trunk else module(self._x(features))

  def penultimate(self, variables, images):
    module = self._merge("eval", variables)
    x = self._x(images)
    if self._has_embed:
      return module(x), module.embed(x)
    linears = [m for _, m in nnx.iter_modules(module) if type(m) is nnx.Linear]
    if not linears:
      raise ModelError(f"{self.name} has no nnx.Linear layer; give it an embed(x) -> "
                       "[B, D] method for coreset, badge and typiclust")
    for m in linears:
      object.__setattr__(m, "__class__", _RecordingLinear)
    token = _SEEN.set([])
    try:
      logits = module(x)
      seen = _SEEN.get()
    finally:
      _SEEN.reset(token)
    return logits, seen[-1].reshape(seen[-1].shape[0], -1)

  def missing(self, need, variables):
    if need == "samples" and not self._has_dropout:
      return (f"{self.name} has no dropout layer (nnx.Dropout), so its Monte Carlo passes "
              "would all be equal; add dropout or use a strategy that needs probabilities "
              "only")
    return None


def adapt(model: Any) -> Any:
  """The adapter of `model`: an adapter as it is, a Linen module wrapped (`TrunkHeadModel`
  for al_jax's CNNs, else `LinenModel` on uint8 images)."""
  if isinstance(model, TrunkHeadCNN):
    return TrunkHeadModel(model)
  if isinstance(model, nn.Module):
    return LinenModel(model)
  if all(hasattr(model, f) for f in ("init", "logits", "train_logits", "penultimate")):
    return model
  raise ModelError(f"{type(model).__name__} is not a model: pass a Flax Linen module, "
                   "an NnxModel or an adapter with init/logits/train_logits/penultimate")


def _variables(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def logits(state, images: jax.Array) -> jax.Array:
  """Inference logits of one model.  images: [B, H, W, C] -> [B, C]."""
  return state.model.logits(_variables(state), images)


def stochastic_log_probs(state, images: jax.Array, key: jax.Array, num_samples: int
                         ) -> jax.Array:
  """K = num_samples Monte Carlo dropout passes of one model: log-probabilities
  [K, B, C]. Pass k uses fold_in(key, k) whatever the chunk, one mask for every image;
  the trunk runs once, the head K times (vmapped over k)."""
  variables = _variables(state)
  _require(state.model, "samples", variables)
  features = state.model.trunk(variables, images)

  def one_pass(k):
    logits = state.model.stochastic_head(variables, features, jax.random.fold_in(key, k))
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)

  return jax.vmap(one_pass)(jnp.arange(num_samples))


def penultimate(state, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(logits [B, C], embeddings [B, D]) of one model in inference mode."""
  _require(state.model, "embeddings", _variables(state))
  return state.model.penultimate(_variables(state), images)


def _require(model, need: str, variables: dict) -> None:
  """ModelError at trace time when `model` lacks `need` (its masks: `check`)."""
  why = model.missing(need, variables)
  if why:
    raise ModelError(f"the strategies that need {need} cannot run on this model: {why}")


def check(model: Any, image_shape: tuple[int, ...], num_classes: int,
          needs: tuple[str, ...] = ()) -> None:
  """One-line ModelError unless `model` maps images [B, *image_shape] to logits
  [B, num_classes] and has what `needs` ("samples", "embeddings") asks, its Monte Carlo
  masks shared by every image of a pass (tried on identical images)."""
  model = adapt(model)
  name = getattr(model, "name", type(getattr(model, "module", model)).__name__)
  rng = np.random.default_rng(0)
  one = (rng.standard_normal((1, *image_shape), np.float32) if len(image_shape) == 1
         else rng.integers(0, 256, (1, *image_shape), np.uint8))
  images = jnp.asarray(np.repeat(one, 4, 0))
  try:
    variables = jax.jit(model.init, static_argnums=1)(jax.random.key(0), tuple(image_shape))
    out = jax.eval_shape(model.logits, variables, images)
  except ModelError:
    raise
  except Exception as error:  # the user's code: its first line says what broke
    raise ModelError(f"model {name} fails on images [4, {', '.join(map(str, image_shape))}]: "
                     f"{type(error).__name__}: {str(error).splitlines()[0][:200]}") from None
  if getattr(out, "shape", None) != (4, num_classes):
    raise ModelError(f"model {name} maps images [4, {', '.join(map(str, image_shape))}] to "
                     f"{getattr(out, 'shape', type(out).__name__)}; it must give logits "
                     f"[4, {num_classes}] (num_classes={num_classes})")
  for need in needs:
    if need not in NEEDS_OF_MODEL:
      continue
    why = model.missing(need, variables)
    if why:
      raise ModelError(f"the strategies that need {need} cannot run on {name}: {why}")
    if need == "embeddings":
      jax.eval_shape(model.penultimate, variables, images)
    if need == "samples" and model.checks_masks:
      _check_masks(model, name, variables, images)


def _check_masks(model, name, variables, images) -> None:
  """Monte Carlo passes on identical images must agree row by row (one mask per pass)
  and differ between keys (dropout is on)."""
  @jax.jit
  def passes(variables, images):
    features = model.trunk(variables, images)
    return jnp.stack([model.stochastic_head(variables, features, jax.random.key(k))
                      for k in range(4)])
  out = np.asarray(passes(variables, images), np.float64)  # [4 keys, 4 images, C]
  if not np.allclose(out, out[:, :1], rtol=1e-5, atol=1e-6):
    raise ModelError(f"{name} draws a new dropout mask per image in a Monte Carlo pass, so "
                     "BALD's and BatchBALD's samples would be inconsistent; use nnx.Dropout "
                     "(al_jax shares its mask over the batch) or one mask per batch "
                     "(broadcast over axis 0)")
  if np.allclose(out, out[:1]):
    raise ModelError(f"{name}'s Monte Carlo passes do not change with the key: its dropout "
                     "is not on at inference; the strategies that need samples need it")
