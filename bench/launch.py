"""Tiny launcher: run a command as a child and write its resource use (wait4) as JSON to a file.

The benchmark does not read ``ru_maxrss`` of its own children directly: Linux starts an exec'd child's peak RSS
at the size of the process it was forked from (the benchmark's), so a small launcher forks the command instead.

    python3 -S -I bench/launch.py RESULT_FILE COMMAND [ARGS...]
"""

import json
import os
import sys


def main() -> int:
    result, argv = sys.argv[1], sys.argv[2:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    with open(result, "w") as f:
        json.dump({"max_rss": ru.ru_maxrss * 1024, "write_bytes": ru.ru_oublock * 512,
                   "read_bytes": ru.ru_inblock * 512, "user": ru.ru_utime, "sys": ru.ru_stime}, f)
    return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(main())
