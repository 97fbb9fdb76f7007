"""Your own model through al_jax's round loop: a Flax NNX CNN shaped like Flax's MNIST
example (two convolutions with batch norm, dropout, two dense layers), an active
learning job of three rounds with two strategies on the shipped MNIST sample, trained
with your own optax optimiser, then resumed from its checkpoints.

  python examples/own_model.py          (about half a minute on two CPU cores)
"""

import tempfile

import optax
from flax import nnx

from al_jax import experiment, model_registry
from al_jax.config import Config
from al_jax.user_training import UserTraining


class CNN(nnx.Module):
  """images [B, 28, 28, 1] (normalised floats) -> logits [B, num_classes]."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 16, kernel_size=(3, 3), rngs=rngs)
    self.bn1 = nnx.BatchNorm(16, rngs=rngs)
    self.conv2 = nnx.Conv(16, 32, kernel_size=(3, 3), rngs=rngs)
    self.bn2 = nnx.BatchNorm(32, rngs=rngs)
    self.dropout = nnx.Dropout(0.25, rngs=rngs)
    self.linear1 = nnx.Linear(7 * 7 * 32, 64, rngs=rngs)
    self.linear2 = nnx.Linear(64, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.avg_pool(nnx.relu(self.bn1(self.conv1(x))), (2, 2), (2, 2))
    x = nnx.avg_pool(nnx.relu(self.bn2(self.conv2(x))), (2, 2), (2, 2))
    x = self.dropout(nnx.relu(self.linear1(x.reshape(x.shape[0], -1))))
    return self.linear2(x)  # the input of this last Linear is the embedding (coreset)


model_registry.register_model("my_cnn", CNN, replace=True)
config = Config(dataset="mnist", data_dir="sample", model="my_cnn",
                metrics=("bald", "coreset"), initial_size=20, query_size=10, rounds=3,
                epochs_per_round=1, min_steps=60, batch_size=16, pool_size=300,
                test_size=200, chunk_size=100, eval_batch_size=100,
                strategy_options={"mc_samples": 4})
training = UserTraining(optimizer=optax.adam(3e-3))
workdir = tempfile.mkdtemp()


class Stop(Exception):
  pass


def stop_after_two(round_index, records):
  if round_index == 1:
    raise Stop  # as a kill after the second round would


try:
  experiment.run(config, workdir, user_training=training, on_round=stop_after_two)
except Stop:
  pass
runs = experiment.run(config, workdir, user_training=training)  # resumes at round 3
for (metric, seed), records in runs.items():
  print(metric, [round(r["test_accuracy"], 3) for r in records],
        [r["num_labeled"] for r in records])
