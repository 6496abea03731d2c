"""Installed by bench.cost in a child process (PYTHONPATH=<repo>:<repo>/bench/_count): counts the process's
requests to Glance and Keystone (testkit.reqcount.Counter) and writes them to $FASTSNAP_BENCH_COUNT_FILE at exit."""

import atexit
import os

_path = os.environ.get("FASTSNAP_BENCH_COUNT_FILE")
if _path:
    from testkit.reqcount import Counter, services_from_env, write_counts

    _counter = Counter(services_from_env(dict(os.environ))).install()
    atexit.register(write_counts, _path, _counter)
