"""The plumbing every capability of the service stands on, with no routes of its own: settings, errors, request
parameters, the database session, PNG handling, the image store, shared counters, the ledger of provider calls,
the HTTP client of the image providers, the provider types, the celebration calendar, observability and the
schema migrations runner.

Modules here import the standard library, third-party packages, `models` and one another: never a module above
them (the providers, the capability packages, `main`). `tests/test_layout.py` checks it.
"""
