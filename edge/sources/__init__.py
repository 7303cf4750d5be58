"""Ingest: one module or package per protocol (file, Modbus, S7, MQTT, OPC-UA), its config
struct beside it.

Every source turns device data into ``SampleBatch`` columns and records, hands them to
``emit``, and never invents a value: a failed read becomes a Bad sample with the
reason, an unreadable input becomes a ``Quarantine`` record with where and why.
Pure parsing and decoding live in their own modules (``file.csv_parse``,
``mqtt_payload``, ``timestamps``; Modbus register decoding and read planning in
``edge.protocols.modbus``) and open no files or sockets.
"""
