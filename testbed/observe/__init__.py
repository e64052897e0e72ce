"""Observers of the emulated world: traffic probes and traces, the topology graph, the audit, reports."""
