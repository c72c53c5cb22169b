"""Helpers of the emulator tests, one module per cloud (``aws``, ``azure``, ``gcp``) and ``loopback`` for the
raw HTTP and gRPC calls they share. Not a conftest: each test module imports what it uses."""
