"""Runtime: supervision, systemd notify, logging and metrics."""
