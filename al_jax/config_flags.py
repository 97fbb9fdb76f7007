"""absl flags generated from the definitions: one flag per `Config` field (its help text,
section and flag name from `config.option`), one per strategy option (from the options
dataclasses of the registered strategies), and the run-layout flags of
`experiment.run`. Entry points call `define_flags()` once and build the job with
`config_from_flags()` and `layout_from_flags()`.

A few flags say a field in other words: --metric=NAME[,NAME...] or all (the paper's
five) for `metrics`, --seed (one run) or --seeds=S (0..S-1) for `seeds`, --classes=a,b for
`classes`, --budget (total labels) for `rounds`.
"""

import dataclasses
import types
import typing
from typing import Any

from absl import flags

from al_jax import metrics, strategies
from al_jax.config import Config, ConfigError, rounds_for_budget

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}

# experiment.run's keyword arguments and the multi-process settings: (type, default, help).
LAYOUT_FLAGS = {
    "workdir": (str, None, "Output folder (default runs/<dataset>_<protocol>)."),
    "overwrite": (bool, False, "Delete a previous run in --workdir and start afresh."),
    "plot": (bool, True, "Write PNG figures after the runs."),
    "keep_checkpoints": (int, 3, "Rounds of checkpoints kept in the workdir (about 9 MB "
                         "per run and round for the MNIST CNN); 0 keeps all."),
    "devices": (int, 0, "Devices to use (0: all of jax.devices()). Several runs are split "
                "over them, the devices left over split each run's pool scoring; results "
                "equal one device's."),
    "data_parallel_training": (bool, False, "Split each run's training batches over its "
                               "devices too: faster, but the weights equal one device's "
                               "only to float rounding, so later selections can differ."),
    "coordinator_address": (str, None, "host:port of process 0 (default "
                            "$JAX_COORDINATOR_ADDRESS or the cluster's)."),
    "num_processes": (int, None, "Processes in the job (default $JAX_NUM_PROCESSES or the "
                      "cluster's)."),
    "process_id": (int, None, "This process, 0..num_processes-1 (default $JAX_PROCESS_ID "
                   "or the cluster's)."),
    "heartbeat_timeout": (int, 100, "Seconds without news from a process before the "
                          "others stop the job."),
}


def _base_type(annotation: Any) -> type:
  """int for `int | None`, str for `tuple[str, ...] | None`, and so on."""
  args = [a for a in typing.get_args(annotation) if a is not type(None)]
  if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
    return _base_type(args[0])
  return annotation if annotation in _DEFINE else str


def config_fields() -> dict[str, dataclasses.Field]:
  """{flag name: Config field} of the fields with a flag of their own."""
  return {f.metadata.get("flag", f.name): f for f in dataclasses.fields(Config)
          if f.metadata.get("flag", f.name) is not None}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines every flag of a job: Config's, the strategies' options, the layout's."""
  for name, field in config_fields().items():
    helptext = f"[{field.metadata['section']}] {field.metadata['help']}"
    if "choices" in field.metadata:
      flags.DEFINE_enum(name, field.default, list(field.metadata["choices"]), helptext,
                        flag_values=flag_values)
    elif name == "classes":
      flags.DEFINE_list(name, None, helptext, flag_values=flag_values)
    else:
      _DEFINE[_base_type(field.type)](name, field.default, helptext, flag_values=flag_values)
  flags.DEFINE_string("metric", "entropy", "[protocol] One of "
                      f"{', '.join(strategies.names())}, or 'all' for the paper's comparison "
                      "(its five), or a comma-separated list.", flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "[protocol] Seed of a single run (when given, --seeds is "
                       "ignored).", flag_values=flag_values)
  flags.DEFINE_integer("seeds", 3, "[protocol] Number of seeds (0..seeds-1) to run and "
                       "average.", flag_values=flag_values)
  flags.DEFINE_integer("budget", None, "[protocol] pool: total labels; sets --rounds.",
                       flag_values=flag_values)
  define_strategy_flags(flag_values)
  for name, (kind, default, helptext) in LAYOUT_FLAGS.items():
    _DEFINE[kind](name, default, f"[layout] {helptext}", flag_values=flag_values)
  flags.DEFINE_enum("distributed", "auto", ["auto", "true", "false"], "[layout] One job "
                    "over several processes (jax.distributed): true, false, or auto = when "
                    "--coordinator_address/--num_processes, JAX_COORDINATOR_ADDRESS / "
                    "JAX_NUM_PROCESSES, or a Slurm / Open MPI job of several tasks say so.",
                    flag_values=flag_values)


def define_strategy_flags(flag_values: flags.FlagValues = flags.FLAGS) -> tuple[str, ...]:
  """Defines --OPTION for every option of every registered strategy (skipping those
  already defined); returns their names."""
  helps = strategies.option_help()
  for name, default in strategies.option_defaults().items():
    if name not in flag_values:
      _DEFINE[type(default)](name, default, f"[strategy] {helps[name]}",
                             flag_values=flag_values)
  return tuple(strategies.option_defaults())


def strategy_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
  """{option: value} of the strategy-option flags, for Config(strategy_options=...)."""
  return {name: flag_values[name].value for name in strategies.option_defaults()
          if name in flag_values}


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Config:
  """The job the flags describe (ConfigError, one line, if it is impossible)."""
  fields = {field.name: flag_values[name].value for name, field in config_fields().items()}
  metric = flag_values["metric"].value
  fields["metrics"] = (metrics.NAMES if metric == "all"
                       else tuple(m.strip() for m in metric.split(",")))
  if flag_values["seeds"].value <= 0:
    raise ConfigError(f"--seeds must be a positive integer, got {flag_values['seeds'].value}")
  fields["seeds"] = ((flag_values["seed"].value,) if flag_values["seed"].present
                     else tuple(range(flag_values["seeds"].value)))
  classes = [c.strip() for c in fields["classes"] or () if c.strip()]
  fields["classes"] = tuple(classes) or None
  if flag_values["budget"].value is not None:
    fields["rounds"] = rounds_for_budget(flag_values["budget"].value, fields["initial_size"],
                                         fields["query_size"])
  return Config(**fields, strategy_options=strategy_flags(flag_values))


def layout_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
  """The layout flags' values, {name: value} (None where unset), checked."""
  out = {name: flag_values[name].value for name in LAYOUT_FLAGS}
  if out["keep_checkpoints"] < 0:
    raise ConfigError("--keep_checkpoints must be >= 0 (0 keeps all)")
  if out["devices"] < 0:
    raise ConfigError("--devices must be >= 0 (0 uses all)")
  out["distributed"] = flag_values["distributed"].value
  return out
