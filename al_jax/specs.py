"""One table of data-set facts: classes, image shape, normalisation, model, optimiser.

Every other module asks `get(name)` instead of branching on a data set's name. The
optimiser and reselect defaults are those of the paper's authors' code (Dominguez-Kuhne
& Zhao, Caltech CNS/CS 186): MNIST-like sets SGD lr 0.01, momentum 0.9, batch 128, 350
reselect epochs of the 25 best batches (batch scores summed); Fruits-360 lr 0.005,
momentum 0.9, weight decay 8e-4, batch 64, 20 epochs of the 20 best batches (averaged).
"""

import dataclasses

from al_jax.fruits360 import FRUIT_CATEGORIES

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal",
                         "shirt", "sneaker", "bag", "ankle boot")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Facts about one data set. mean/std are per channel, in [0, 1] pixel units."""
  name: str
  class_names: tuple[str, ...]
  channels: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  model: str                    # a key of al_jax.models.MODELS, or "auto": by channels
  batch_size: int
  learning_rate: float
  momentum: float
  weight_decay: float
  epochs: int                   # reselect protocol
  select_batches: int           # reselect protocol
  batch_aggregate: str          # reselect protocol: "sum" or "mean" of a batch's scores
  native_size: int | None = None  # fixed image side (MNIST 28); None: resized to image_size

  def model_for(self, image_shape: tuple[int, ...]) -> str:
    """The model name for images [H, W, C]: "auto" picks by channels (grey: MNIST CNN)."""
    if self.model != "auto":
      return self.model
    return "mnist_cnn" if image_shape[-1] == 1 else "fruits_net3"

  def image_shape(self, image_size: int) -> tuple[int, int, int]:
    """[H, W, C] of the images the loader returns for `--image_size=image_size`."""
    side = self.native_size or image_size
    return (side, side, self.channels)


_MNIST_LIKE = dict(channels=1, mean=(0.5,), std=(0.5,), model="mnist_cnn", batch_size=128,
                   learning_rate=0.01, momentum=0.9, weight_decay=0.0, epochs=350,
                   select_batches=25, batch_aggregate="sum", native_size=28)

SPECS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", MNIST_CLASSES, **_MNIST_LIKE),
    "fashion_mnist": DatasetSpec("fashion_mnist", FASHION_MNIST_CLASSES, **_MNIST_LIKE),
    "fruits360": DatasetSpec(
        "fruits360", FRUIT_CATEGORIES, channels=3, mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010), model="fruits_net3", batch_size=64,
        learning_rate=0.005, momentum=0.9, weight_decay=8e-4, epochs=20, select_batches=20,
        batch_aggregate="mean"),
    # The user's own images (`data.load_folder`): classes come from the folders, the
    # model from the channels; pixels are mapped to [-1, 1], Fruits-360's optimiser.
    "folder": DatasetSpec(
        "folder", (), channels=0, mean=(0.5,), std=(0.5,), model="auto", batch_size=64,
        learning_rate=0.005, momentum=0.9, weight_decay=8e-4, epochs=20, select_batches=20,
        batch_aggregate="mean"),
}
# A pool on disk as .npy files (`al_jax.npy_data`), which a job can stream: like a folder.
SPECS["npy"] = dataclasses.replace(SPECS["folder"], name="npy")
NAMES: tuple[str, ...] = tuple(SPECS)

# Any TensorFlow Datasets image-classification set, "tfds:NAME" (`al_jax.tfds_data`):
# like a folder, classes from the label feature and the model from the channels.
TFDS_PREFIX = "tfds:"
_TFDS = dataclasses.replace(SPECS["folder"], name="tfds")


def get(name: str) -> DatasetSpec:
  """The spec of data set `name` (one of NAMES, or "tfds:NAME"); ValueError otherwise."""
  if name in SPECS:
    return SPECS[name]
  if isinstance(name, str) and name.startswith(TFDS_PREFIX) and name[len(TFDS_PREFIX):]:
    return dataclasses.replace(_TFDS, name=name)
  raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(NAMES)}, "
                   f"{TFDS_PREFIX}NAME (a TFDS image-classification data set)")
