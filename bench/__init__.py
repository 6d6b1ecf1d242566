"""Benchmark suite: a fast fake OpenRouter, floors, a load generator and the runner."""
