"""Sparkplug B 3.0 edge node: payload schema, payload encoding, session state machine.

* ``sparkplug_b.proto`` is the payload schema, written from the specification's payload
  definition; ``sparkplug_b_pb2.py``/``.pyi`` are generated from it (never edit them):

      python -m grpc_tools.protoc -I edge/protocols/sparkplug \\
        --python_out=edge/protocols/sparkplug --pyi_out=edge/protocols/sparkplug \\
        edge/protocols/sparkplug/sparkplug_b.proto

  (grpcio-tools 1.85.4, libprotoc 35.1, Python gencode 7.35.1: the ``protobuf`` runtime
  must be >= 7.35.1, as pyproject.toml requires.)
* ``payload`` maps our tags and values to Sparkplug metrics (no sockets).
* ``session`` is the edge node's session as a pure state machine
  ``step(state, event) -> (state, actions)``; the sink carries the actions out.
"""
