"""casework beside its peers on the petition lifecycle: the suite ``python -m bench peers``.

See ``bench/peers/runner.py`` for what is measured and ``bench/README.md`` for how to run
it. The peers' packages (Django, django-fsm-2, python-statemachine, SpiffWorkflow) are the
optional ``bench`` group of ``pyproject.toml``; the engine never imports them, and a peer
whose package is missing is skipped.
"""
