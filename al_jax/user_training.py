"""Your own training in the round loop: an optax optimiser, a loss, or a whole train step.

    training = UserTraining(optimizer=optax.adam(1e-3))             # any optax transform
    training = UserTraining(loss=lambda logits, labels: ...)        # [B, C], [B] -> []
    training = UserTraining(train_step=my_step)                     # (state, batch, key)
    experiment.run(config, workdir, user_training=training)         # or RoundLoop(...)

`train_step(state, batch, key) -> (state, {"loss": [], "accuracy": []})` takes the
`training.TrainState` (params, batch_stats, opt_state, step, the optimiser as state.tx)
and batch {"image": uint8 [B, H, W, C], "label": int32 [B]}; `state.logits(images,
train=True, key=key, params=params)` gives (logits, {"batch_stats": ...}) as al_jax's
own step uses it. Whatever is given, `fit` runs it inside the same compiled loop
(epochs, --min_steps, early stopping), the state stays one pytree, checkpointed each
round and resumed exactly; a model is fresh each round (initialised from the round's
key) unless --keep_training, when the previous round's state, optimiser state
included, trains on. Nothing of it is written to config.json: a resumed job must be
given the same training again.
"""

import dataclasses
from collections.abc import Callable

import optax


@dataclasses.dataclass(frozen=True)
class UserTraining:
  """What replaces al_jax's SGD and cross-entropy (None: al_jax's own)."""
  optimizer: optax.GradientTransformation | None = None
  loss: Callable | None = None
  train_step: Callable | None = None

  def __post_init__(self):
    if self.loss is not None and self.train_step is not None:
      raise ValueError("give UserTraining a loss or a train_step, not both: a train_step "
                       "computes its own loss")
