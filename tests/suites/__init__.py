"""Tests of the ping, bandwidth and storage suites and their parsers."""
