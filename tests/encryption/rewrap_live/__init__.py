"""Re-wrap tests that must run without ``tests/encryption/rewrap/conftest.py``'s autouse ``queued`` stub: real
Celery workers and beat (``test_rewrap_worker.py``), the /encryption pages whose after-commit callbacks queue
the walk for real (``test_rewrap_views.py``), and walks with their own batch and version-size settings
(``test_walk_fills.py``)."""
