"""Tests of the testbed drivers, the janitor and recipe hooks."""
