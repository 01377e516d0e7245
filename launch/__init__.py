"""Launchers: the commands that start processes or drive the service as a client.

`robaudit serve` (serve.py), `robaudit worker` (worker.py), `robaudit demo` (demo.py) and
`robaudit study` (study.py), the embedded service they start (service.py) and what the client
commands share (client.py). The top layer: it imports the backend and the worker, nothing
imports it (tests/test_import_direction.py).
"""
