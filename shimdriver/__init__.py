"""A client that drives the adaptor the way the Kata shim does."""
