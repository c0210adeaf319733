"""What runs: command-line entry points (and, later, sweep specs and executors)."""
