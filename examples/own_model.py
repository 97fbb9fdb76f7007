"""Your own model through al_jax's round loop, the README's "Your own model" block as a
script: a Flax NNX CNN shaped like Flax's MNIST example (two convolutions with batch
norm, dropout, two dense layers), an active learning job of three rounds with two
strategies on the shipped MNIST sample, trained with your own optax optimiser, stopped
after round 2 and resumed from its checkpoints (tests/test_readme.py keeps the two the
same and runs the block).

  python examples/own_model.py          (about half a minute on two CPU cores)
"""

import tempfile
import optax
from flax import nnx
from al_jax import experiment, model_registry
from al_jax.config import Config
from al_jax.user_training import UserTraining

class CNN(nnx.Module):  # the shape of Flax's MNIST example, with batch norm and dropout
  def __init__(self, num_classes, *, rngs):
    self.conv1, self.bn1 = nnx.Conv(1, 16, (3, 3), rngs=rngs), nnx.BatchNorm(16, rngs=rngs)
    self.conv2, self.bn2 = nnx.Conv(16, 32, (3, 3), rngs=rngs), nnx.BatchNorm(32, rngs=rngs)
    self.dropout = nnx.Dropout(0.25, rngs=rngs)
    self.linear1 = nnx.Linear(7 * 7 * 32, 64, rngs=rngs)
    self.linear2 = nnx.Linear(64, num_classes, rngs=rngs)

  def __call__(self, x):                           # [B, 28, 28, 1] normalised -> [B, C]
    x = nnx.avg_pool(nnx.relu(self.bn1(self.conv1(x))), (2, 2), (2, 2))
    x = nnx.avg_pool(nnx.relu(self.bn2(self.conv2(x))), (2, 2), (2, 2))
    x = self.dropout(nnx.relu(self.linear1(x.reshape(x.shape[0], -1))))
    return self.linear2(x)                         # its input: the embedding for coreset

model_registry.register_model("my_cnn", CNN, replace=True)
config = Config(dataset="mnist", data_dir="sample", model="my_cnn", metrics=("bald", "coreset"),
                initial_size=20, query_size=10, rounds=3, epochs_per_round=1, min_steps=60,
                batch_size=16, pool_size=300, test_size=200, chunk_size=100,
                eval_batch_size=100, strategy_options={"mc_samples": 4})
training, workdir = UserTraining(optimizer=optax.adam(3e-3)), tempfile.mkdtemp()

class Stop(Exception):
  pass

def stop_after_two(round_index, records):          # as a kill after round 2 would
  if round_index == 1:
    raise Stop
try:
  experiment.run(config, workdir, user_training=training, on_round=stop_after_two)
except Stop:
  pass
runs = experiment.run(config, workdir, user_training=training)   # resumes at round 3
for (metric, seed), records in runs.items():
  print(metric, [r["num_labeled"] for r in records], [r["test_accuracy"] for r in records])
