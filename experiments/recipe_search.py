"""Chooses the training recipe for tiny labeled sets without the test set (issue 21).

Each recipe trains a fresh model on labeled sets drawn as the pool protocol's random
strategy draws them (20 class-balanced labels, then uniformly random ones) from the first
50,000 MNIST training images, and is scored on the last 10,000 training images, a
validation split the study's pool never labels... and the test set is never read.
Prints one JSON line per recipe as it finishes (so a stopped search keeps what it did):
its settings and, per labeled-set size, the validation accuracy (mean, std over seeds)
and the median seconds per fit (the first includes compiling).

  python experiments/recipe_search.py --data_dir=DATA >> docs/benchmarks/recipe_search.jsonl
"""

import dataclasses
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from al_jax import datasets, models, specs, training
from al_jax.augment import Augment

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder holding mnist/ (default: "
                                "$AL_JAX_DATA_DIR).")
_SIZES = flags.DEFINE_list("sizes", ["50", "100", "200"], "Labeled-set sizes.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Labeled sets (and initialisations) per size.")
_RECIPES = flags.DEFINE_list("recipes", None, "Recipes to run (default: all).")
VALIDATION = 10_000


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How one round trains: the pool protocol's settings that a recipe may change."""
  min_steps: int = 250
  batch_size: int = 32
  learning_rate: float = 0.01
  weight_decay: float = 0.0
  max_shift: float = 0.0
  max_degrees: float = 0.0
  model: str = "pooled_cnn"


RECIPES = {
    "small_budget": Recipe(),
    "steps500": Recipe(min_steps=500),
    "wd5e-4": Recipe(weight_decay=5e-4),
    "aug": Recipe(max_shift=2, max_degrees=10),
    "aug_steps500": Recipe(min_steps=500, max_shift=2, max_degrees=10),
    "aug_steps1000": Recipe(min_steps=1000, max_shift=2, max_degrees=10),
    "aug_steps500_wd5e-4": Recipe(min_steps=500, max_shift=2, max_degrees=10,
                                  weight_decay=5e-4),
    "aug3_15_steps500": Recipe(min_steps=500, max_shift=3, max_degrees=15),
    "aug_steps500_lr0.03": Recipe(min_steps=500, max_shift=2, max_degrees=10,
                                  learning_rate=0.03),
    "aug3_15": Recipe(max_shift=3, max_degrees=15),
    "aug_wd5e-4": Recipe(max_shift=2, max_degrees=10, weight_decay=5e-4),
    "aug_lr0.03": Recipe(max_shift=2, max_degrees=10, learning_rate=0.03),
}


def labeled_mask(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """20 class-balanced labels (2 per class), then random ones up to `size`.  [N] bool."""
  mask = np.zeros(labels.shape[0], bool)
  for c in np.unique(labels):
    mask[rng.choice(np.flatnonzero(labels == c), 2, replace=False)] = True
  mask[rng.choice(np.flatnonzero(~mask), size - mask.sum(), replace=False)] = True
  return mask


def make_fit(recipe: Recipe, spec, num_classes: int, image_shape):
  """A jitted (key, images, labels, mask, val_images, val_labels) -> validation accuracy."""
  model = models.create_model(spec, num_classes, model=recipe.model)
  tx = training.make_optimizer(recipe.learning_rate, 0.9, recipe.weight_decay)
  augment = Augment(recipe.max_shift, recipe.max_degrees)

  @jax.jit
  def run(key, images, labels, mask, val_images, val_labels):
    init_key, train_key = jax.random.split(key)
    state = training.create_train_state(model, init_key, image_shape, tx)
    state, _ = training.fit(state, images, labels, mask, train_key, epochs=1,
                            batch_size=recipe.batch_size, min_steps=recipe.min_steps,
                            augment=augment)
    return training.evaluate(state, val_images, val_labels)["test_accuracy"]
  return run


def main(argv):
  del argv
  data = datasets.load("mnist", _DATA_DIR.value)
  spec = specs.get("mnist")
  pool_images = jnp.asarray(data.train_images[:-VALIDATION])
  pool_labels = data.train_labels[:-VALIDATION]
  val_images = jnp.asarray(data.train_images[-VALIDATION:])
  val_labels = jnp.asarray(data.train_labels[-VALIDATION:])
  names = _RECIPES.value or list(RECIPES)
  for name in names:
    recipe = RECIPES[name]
    run = make_fit(recipe, spec, data.num_classes, data.train_images.shape[1:])
    rows = {}
    for size in map(int, _SIZES.value):
      accuracies, seconds = [], []
      for seed in range(_SEEDS.value):
        mask = labeled_mask(pool_labels, size, np.random.default_rng([size, seed]))
        start = time.perf_counter()
        accuracy = float(run(jax.random.key(seed), pool_images, jnp.asarray(pool_labels),
                             jnp.asarray(mask), val_images, val_labels))
        seconds.append(time.perf_counter() - start)
        accuracies.append(accuracy)
      rows[size] = {"mean": round(statistics.fmean(accuracies), 4),
                    "std": round(statistics.pstdev(accuracies), 4),
                    "seconds_per_fit": round(statistics.median(seconds), 1)}
    print(json.dumps({"recipe": name, "settings": dataclasses.asdict(recipe),
                      "seeds": _SEEDS.value, "validation_accuracy": rows,
                      "validation": f"the last {VALIDATION} MNIST training images",
                      "pool": f"the first {pool_labels.shape[0]} MNIST training images"}),
          flush=True)


if __name__ == "__main__":
  app.run(main)
