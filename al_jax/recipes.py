"""Training recipes: defaults for how a round trains, by budget (not facts of a data set).

  paper         the data set's own model and the authors' batch size, the given epochs
                only (the reselect protocol's default; experiments/reproduce.sh)
  small_budget  the pool protocol's default: at least SMALL_BUDGET_MIN_STEPS SGD steps
                per round at batch SMALL_BUDGET_BATCH, and the pooled CNN instead of the
                paper's MNIST CNN (whose 9,216-wide dense input is too much to fit from
                tens of labels); docs/RESULTS.md compares the two
"""

RECIPES = ("paper", "small_budget")
SMALL_BUDGET_MIN_STEPS = 250
SMALL_BUDGET_BATCH = 32


def default_recipe(protocol: str) -> str:
  """small_budget for the pool protocol, paper for reselect."""
  return "small_budget" if protocol == "pool" else "paper"


def defaults(recipe: str) -> dict[str, int]:
  """The training settings `recipe` fixes when none is given: min_steps (and batch_size)."""
  if recipe == "small_budget":
    return {"min_steps": SMALL_BUDGET_MIN_STEPS, "batch_size": SMALL_BUDGET_BATCH}
  return {"min_steps": 0}


def model(recipe: str, own: str) -> str:
  """The CNN under `recipe` for a data set whose own model is `own`: the pooled CNN in
  place of the MNIST CNN under small_budget."""
  return "pooled_cnn" if recipe == "small_budget" and own == "mnist_cnn" else own
