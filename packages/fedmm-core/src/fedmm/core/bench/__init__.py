"""Benchmarks run by ``fedmm bench NAME [--quick]``; each returns a JSON-able dict of measured figures.

Other packages register theirs under the ``fedmm.benchmarks`` entry-point group
(a callable ``run(quick: bool) -> dict``).
"""
