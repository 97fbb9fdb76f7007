"""Data-set facts by name: `get(name)` -> the `DatasetSpec` (classes, image shape,
normalisation, model, optimiser and reselect defaults) that the data set's source
registered (`al_jax.datasets`; e.g. `al_jax.datasets.idx` for MNIST's). Every other
module asks `get(name)` instead of branching on a data set's name.
"""

from al_jax import datasets

DatasetSpec = datasets.DatasetSpec
TFDS_PREFIX = datasets.tfds.PREFIX
# The data sets registered when this module was first imported (the built-in ones), for
# flag help; `datasets.names()` reads the registry when called.
NAMES: tuple[str, ...] = tuple(n for n in datasets.names() if not n.endswith(":"))


def get(name: str) -> DatasetSpec:
  """The spec of data set `name` (a registered name, or "tfds:NAME"); ValueError otherwise."""
  try:
    return datasets.spec(name)
  except datasets.DataError:
    raise ValueError(f"unknown dataset {name!r}; valid: {datasets.names_help()}") from None
