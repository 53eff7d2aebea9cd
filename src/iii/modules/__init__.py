"""Engine modules: the capabilities around the engine's core (state, pub/sub, cron, ...).

Every module is written against :mod:`iii.modules.api` alone (what any worker can do), so it runs inside the
engine by default and, unchanged, as its own worker process next to any engine.
"""
