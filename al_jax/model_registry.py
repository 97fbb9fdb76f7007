"""Models by name: al_jax's CNNs, the models a script registers, and a user's module
class named on the command line (`--model=path/to/file.py:Name` or `module:Name`).

A user's class is either

  a Flax NNX module, built as `Name(num_classes=C, rngs=nnx.Rngs(key))`, or
  a Flax Linen module, built as `Name(num_classes=C)`,

whose `__call__(x)` maps images x [B, H, W, C] to logits [B, C]. x is float32,
normalised as al_jax's own CNNs normalise (x / 255 - mean) / std with the data set's
per-channel mean and std (`register_model(..., inputs="uint8")`: the uint8 images as
they are). What else a strategy asks of it (dropout, embeddings) is in
`al_jax.model_api`. A file or module is imported once per process; a missing file, an
import that fails or a name it lacks is one ModelError line.
"""

import importlib
import importlib.util
import os
import sys
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx

from al_jax import model_api, models
from al_jax.model_api import ModelError
from al_jax.specs import DatasetSpec

INPUTS = ("normalized", "uint8")
_REGISTERED: dict[str, tuple[type, str]] = {}


def register_model(name: str, cls: type, *, inputs: str = "normalized",
                   replace: bool = False) -> type:
  """Makes the NNX or Linen module class `cls` the model called `name` (for
  `--model=name`, a Config, the labeling page); returns cls. inputs: "normalized"
  (float32 (x / 255 - mean) / std, the default) or "uint8"."""
  if name in models.MODELS or (name in _REGISTERED and not replace):
    raise ModelError(f"model {name!r} is already registered; pass replace=True or use "
                     "another name")
  if ":" in name or not name:
    raise ModelError(f"a model name is a non-empty string without ':', got {name!r}")
  if inputs not in INPUTS:
    raise ModelError(f"unknown inputs {inputs!r}; valid: {', '.join(INPUTS)}")
  _check_class(cls, name)
  _REGISTERED[name] = (cls, inputs)
  return cls


def unregister_model(name: str) -> None:
  """Removes a model that `register_model` added (e.g. at the end of a test)."""
  _REGISTERED.pop(name)


def names() -> tuple[str, ...]:
  """al_jax's CNNs, then the registered models."""
  return (*models.MODELS, *_REGISTERED)


def is_import_spec(name: str) -> bool:
  """Whether `name` names a class to import: "file.py:Name" or "module:Name"."""
  return ":" in name


def resolve(name: str) -> str:
  """`name` as a Config keeps it: a file spec with its absolute path (so a resumed job
  finds it from any folder), anything else as it is."""
  if is_import_spec(name):
    where, cls = name.rsplit(":", 1)
    if where.endswith(".py"):
      return f"{os.path.abspath(os.path.expanduser(where))}:{cls}"
  return name


def check_name(name: str) -> None:
  """ModelError (one line) unless `name` is a known model or a class that imports."""
  if is_import_spec(name):
    load_class(name)
  elif name not in names():
    raise ModelError(f"unknown model {name!r}; valid: {', '.join(names())}, or "
                     "path/to/file.py:ClassName or package.module:ClassName")


def load_class(spec: str) -> type:
  """The class of "path/to/file.py:Name" or "package.module:Name"."""
  where, cls_name = spec.rsplit(":", 1)
  if where.endswith(".py"):
    path = os.path.abspath(os.path.expanduser(where))
    if not os.path.isfile(path):
      raise ModelError(f"model file {where} not found; give --model=path/to/file.py:ClassName")
    module_name = "al_jax_user_model_" + "".join(c if c.isalnum() else "_" for c in path)
    module = sys.modules.get(module_name)
    if module is None:
      module = _import(lambda: _exec_file(module_name, path), where)
  else:
    module = _import(lambda: importlib.import_module(where), where)
  cls = getattr(module, cls_name, None)
  if cls is None:
    raise ModelError(f"{where} defines no {cls_name!r}; give --model={where}:ClassName")
  _check_class(cls, spec)
  return cls


def _exec_file(module_name: str, path: str):
  spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[module_name] = module
  try:
    spec.loader.exec_module(module)
  except BaseException:
    del sys.modules[module_name]
    raise
  return module


def _import(load, where: str):
  try:
    return load()
  except Exception as error:  # the user's code: its first line says what broke
    raise ModelError(f"importing model {where} failed: {type(error).__name__}: "
                     f"{str(error).splitlines()[0][:200] if str(error) else ''}") from None


def _check_class(cls: Any, name: str) -> None:
  if not (isinstance(cls, type) and issubclass(cls, (nnx.Module, nn.Module))):
    raise ModelError(f"model {name} is {cls!r}, not a Flax NNX or Linen module class")


def create(name: str, spec: DatasetSpec, num_classes: int, dtype: jnp.dtype = jnp.float32
           ) -> Any:
  """The `model_api` adapter of model `name` (al_jax's CNN, a registered or an imported
  class) for `num_classes` classes, normalising by the data set spec's mean and std."""
  if name in models.MODELS:
    return model_api.TrunkHeadModel(models.create_model(spec, num_classes, dtype, model=name))
  if is_import_spec(name):
    cls, inputs = load_class(name), "normalized"
  elif name in _REGISTERED:
    cls, inputs = _REGISTERED[name]
  else:
    check_name(name)
  norm = (tuple(spec.mean), tuple(spec.std)) if inputs == "normalized" else (None, None)
  if issubclass(cls, nnx.Module):
    return model_api.NnxModel(_NnxFactory(cls, num_classes), *norm, name=cls.__name__)
  return model_api.LinenModel(cls(num_classes=num_classes), *norm)


class _NnxFactory:
  """rngs -> cls(num_classes=C, rngs=rngs); equal for equal (cls, C)."""

  def __init__(self, cls: type, num_classes: int):
    self.cls, self.num_classes = cls, num_classes

  def __call__(self, rngs: nnx.Rngs) -> nnx.Module:
    return self.cls(num_classes=self.num_classes, rngs=rngs)
