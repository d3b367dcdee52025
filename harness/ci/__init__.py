"""The nightly kernel CI job: per-kernel runs, baselines of accepted failure rates, known
failures, and merging the jobs of a CI matrix into one report. May import ``report`` and the
layers below it.
"""
