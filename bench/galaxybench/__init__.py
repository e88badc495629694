"""The pieces of ``bench/run.py`` (galaxyctl vs gravity, side by side), one concern per module.

- ``common``: paths, shared constants, ``log`` and ``median``;
- ``processes``: running commands as the bench user with wall time and peak RSS, and the PID
  bookkeeping that stops every process the bench started;
- ``environments``: the two venvs (gravity from PyPI, this checkout) and what they contain;
- ``tools``: gravity and ours as command lines, the demo Galaxy instances they manage, the
  ``gravity:`` settings both get, and the session that cleans up at the end;
- ``measure``: one sample of one tool: the HTTP probe, ``start`` to ready, ``graceful`` under a
  request loop, a profile of ours' ``status``;
- ``scenarios``: the scenarios (warm-ups, A/B interleaving) that fill the raw results;
- ``report``: raw results to the table and the targets, printed and written as JSON;
- ``container`` and ``systemd_scenarios``: systemd mode (``bench/systemd.py``): both tools in one
  systemd-nspawn container (``tests/nspawn.py``), their scenarios and table.

Standard library only: the bench runs from a bare interpreter, before either venv exists.
"""
