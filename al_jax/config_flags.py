"""absl flags generated from the definitions: one flag per strategy option, from the
options dataclasses of the registered strategies (`al_jax.strategies`).

Entry points call `define_strategy_flags(FLAGS)` once when they define their flags and
pass `strategy_flags(FLAGS)` as `Config(strategy_options=...)`.
"""

from typing import Any

from absl import flags

from al_jax import strategies

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def define_strategy_flags(flag_values: flags.FlagValues = flags.FLAGS) -> tuple[str, ...]:
  """Defines --OPTION for every option of every registered strategy (skipping those
  already defined); returns their names."""
  helps = strategies.option_help()
  for name, default in strategies.option_defaults().items():
    if name not in flag_values:
      _DEFINE[type(default)](name, default, helps[name], flag_values=flag_values)
  return tuple(strategies.option_defaults())


def strategy_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
  """{option: value} of the strategy-option flags, for Config(strategy_options=...)."""
  return {name: flag_values[name].value for name in strategies.option_defaults()
          if name in flag_values}
