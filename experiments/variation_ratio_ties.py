"""How often variation ratios ties, and what the seeded tie-break changed (issue 21).

Trains the study's model (pooled CNN, the frozen recipe) on 20 class-balanced MNIST
labels, scores the whole 60,000-image pool with variation ratios at K passes, and prints
one JSON object: how many pool images share the top score and the 10th pick's score (the
cut), and for the 10 chosen the
pool indices without the tie-break (lax.top_k: the lowest indices) and with it.

  python experiments/variation_ratio_ties.py --data_dir=DATA
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from al_jax import acquisition, bayesian, datasets, model_registry, scoring, specs, training
from al_jax.augment import Augment

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder holding mnist/.")
_PASSES = flags.DEFINE_integer("mc_samples", 20, "Monte Carlo dropout passes K.")


def main(argv):
  del argv
  data = datasets.load("mnist", _DATA_DIR.value)
  images, labels = jnp.asarray(data.train_images), jnp.asarray(data.train_labels)
  rng = np.random.default_rng(0)
  mask = np.zeros(labels.shape[0], bool)
  for c in range(10):
    mask[rng.choice(np.flatnonzero(data.train_labels == c), 2, replace=False)] = True
  model = model_registry.create("pooled_cnn", specs.get("mnist"), 10)
  state = training.create_train_state(model, jax.random.key(0), (28, 28, 1),
                                      training.make_optimizer(0.01, 0.9, 0.0))
  state, _ = jax.jit(lambda s: training.fit(s, images, labels, jnp.asarray(mask),
                                            jax.random.key(1), epochs=1, batch_size=32,
                                            min_steps=250, augment=Augment(2, 10)))(state)
  key, k = jax.random.key(2), _PASSES.value
  scores = np.asarray(bayesian.variation_ratios(
      scoring.pool_log_probs(state, images, key, k, chunk_size=1000)))
  available = ~mask
  top = np.max(scores[available])
  lowest_index = np.asarray(scoring.select_top_k(jnp.asarray(scores), jnp.asarray(available),
                                                 10))
  strategy = jax.jit(acquisition.make("variation_ratios", k=10, chunk_size=1000,
                                      mc_samples=k))
  chosen = np.asarray(strategy(state, images, jnp.asarray(available), key).indices)
  print(json.dumps({
      "mc_samples": k, "pool": int(available.sum()), "top_score": float(top),
      "images_at_top_score": int(np.sum(np.isclose(scores[available], top))),
      "score_at_the_cut": float(np.min(scores[lowest_index])),
      "images_tied_at_the_cut": int(np.sum(np.isclose(scores[available],
                                                      np.min(scores[lowest_index])))),
      "distinct_scores": int(len(np.unique(np.round(scores * k)))),
      "without_tie_break": sorted(lowest_index.tolist()),
      "with_tie_break": sorted(chosen.tolist()),
      "chosen_scores_equal": bool(np.allclose(np.sort(scores[chosen]),
                                              np.sort(scores[lowest_index])))}))


if __name__ == "__main__":
  app.run(main)
