"""TOML -> typed, validated configuration.

One module per part, every public name re-exported here (``from edge.config import X``
is how the rest of the code imports them): ``structs`` (``ConfigStruct``, the
``[gateway]`` and ``[journal]`` sections, the ``Config`` document), ``registry`` (the
component types), ``load`` (TOML -> ``Config``, every mistake reported), ``secrets``
(secret names and the reader).

Invariants:

* Every section is decoded by msgspec into a frozen Struct that forbids unknown keys, so
  a typo is an error, never a silently ignored setting.
* Every error is a ``ConfigError`` whose message names the component and the key, e.g.
  ``source 'etch1': register 'chamber_temp': scale must not be 0``. ``load`` reports
  every mistake in the file, not only the first (``ConfigProblems``: one per line,
  ``<file>:<line>:`` first where the line is known; see ``edge.config_explain``), and
  raises nothing but ``ConfigError``, whatever the bytes in the file.
* Secrets are never in the file: a config holds the *name* of a secret, read at start-up
  from ``$CREDENTIALS_DIRECTORY/<name>`` (systemd ``LoadCredential=``) or the environment.
* Component types are looked up in ``SOURCE_TYPES``/``SINK_TYPES``/``SECTION_TYPES``; the
  struct for a type lives beside its component (``edge/sources/modbus/config.py``
  holds ``ModbusSourceConfig``) and is imported only when a config uses it.
"""

from edge.config.load import ConfigProblems, convert, from_raw, load, loads
from edge.config.registry import SECTION_TYPES, SINK_TYPES, SOURCE_TYPES, import_struct
from edge.config.secrets import check_secret_name, secret_reader
from edge.config.structs import Config, ConfigStruct, GatewaySection, JournalSection
from edge.errors import ConfigError

__all__ = [
    "SECTION_TYPES",
    "SINK_TYPES",
    "SOURCE_TYPES",
    "Config",
    "ConfigError",
    "ConfigProblems",
    "ConfigStruct",
    "GatewaySection",
    "JournalSection",
    "check_secret_name",
    "convert",
    "from_raw",
    "import_struct",
    "load",
    "loads",
    "secret_reader",
]
