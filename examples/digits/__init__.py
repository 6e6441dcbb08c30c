"""The digits demo (`make demo`)."""
