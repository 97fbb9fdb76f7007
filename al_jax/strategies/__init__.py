"""Acquisition strategies, one module each, found by name in one registry (`base`).

Built in, registered in this order: the paper's scorers (`uncertainty`), the Bayesian
scorers (`sampled`), `batchbald`, `stochastic` (stochastic_<scorer>), `coreset`, `badge`
and `typiclust`. A strategy of your own: a module (or script) that calls
`al_jax.strategies.register(Strategy(name, build, Options, ...))` before the job is
built; `base` says what a strategy declares.
"""

# pylint: disable=unused-import
from al_jax.strategies import uncertainty  # noqa: F401  (each module registers itself)
from al_jax.strategies import sampled  # noqa: F401
from al_jax.strategies import batchbald  # noqa: F401
from al_jax.strategies import stochastic  # noqa: F401
from al_jax.strategies import coreset  # noqa: F401
from al_jax.strategies import badge  # noqa: F401
from al_jax.strategies import typiclust  # noqa: F401
from al_jax.strategies.base import (NEEDS, Acquisition, NoOptions,  # noqa: F401
                                    Selection, Strategy, check_positive, get, make, names,
                                    option_defaults, option_help, options_of, register,
                                    resolved_options, streams, unregister)
