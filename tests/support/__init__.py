"""Helpers shared by the test modules and the benchmarks (test modules never import
each other): real processes, the raw WebSocket client, waiting without blocking."""
