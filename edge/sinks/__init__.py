"""Delivery targets: the OPC-UA live sink and the durable sinks fed from the journal."""
