"""Test support: local stand-ins for the services prefect-atlas talks to.

For testing one's own flows and for the benchmarks in ``bench/``; prefect-atlas's own test
suite uses them too. Nothing here is imported by ``import prefect_atlas``: import the module
you need.

- :mod:`prefect_atlas.testing.discord`: a Discord-like webhook server on 127.0.0.1 (with
  Discord's rate limits and switchable faults) and a cross-process alert storm.
- :mod:`prefect_atlas.testing.postgres`: create and drop throwaway databases, and the
  conninfo a :class:`~prefect_atlas.DatabaseBlock` would connect with.
- :mod:`prefect_atlas.testing.gcp`: a local OAuth2 token endpoint and a service-account key
  that points at it, so that Google credentials work offline.
"""
