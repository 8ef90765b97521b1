"""Helpers the tests and benchmarks import (no tests here): servers, topologies, waiting."""
