"""What the tests and the benchmarks share: the stack's env.sh reader, the stack's connections, Nova's REST API,
the Nova compute host and its guest, the REST service of a test, the counting proxy, the load mix and the
RESULTS.md section writer.

tests/ and bench/ import this package and never each other; it imports neither (tests/unit/test_layout.py). It is
not part of the fastsnap wheel: it needs the test stack of ceph-test-env/.
"""
