"""``medsyn serve``: a GPU server that runs generate / segment / edit for other machines (docs/server.md).

:mod:`.cli` the command, :mod:`.app` the HTTP API (FastAPI, the ``server`` extra), :mod:`.jobs` the queue and its
workers (each job is the ``medsyn`` command line itself, in a process of its own). The client is
:mod:`MedSynLib.remote` (standard library only).
"""
