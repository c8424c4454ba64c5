"""Ingest's peak memory as one log file grows: it must stream the file, not hold it.

    python benchmarks/memory.py                          # 64 MiB to 2 GiB, memory_limit 128MB
    python benchmarks/memory.py --sizes 256 1024 --memory-limit 2GB

For each size a fresh home gets one JSONL file (`dmn.worlds.synthetic.big_log`, 256-d states) and a fresh
process ingests it; the table gives the records, the process's peak resident memory (libraries
included) and its ratio to the file's size. Memory that stays flat while the file grows is the target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dmn import Home
from dmn.worlds.synthetic import big_log

PEAK = """
import json, re, sys
from pathlib import Path
from dmn import Home
from dmn.lake.ingest import ingest
report = ingest(Home.resolve(sys.argv[1]))
# This process's own high-water mark (ru_maxrss would include the parent's, inherited across fork and exec).
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
print(json.dumps({"records": sum(report.records.values()), "peak": peak}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 2048], help="file sizes in MiB")
    parser.add_argument("--memory-limit", default="128MB", help="[ingest] memory_limit")
    args = parser.parse_args()
    print(f"memory_limit = {args.memory_limit}")
    print(f"{'file MiB':>9} {'records':>10} {'peak MiB':>9} {'peak/file':>10} {'seconds':>8}")
    for megabytes in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            home = Home.resolve(Path(tmp) / "home")
            (home.root / "dmn.toml").write_text(f'[ingest]\nmemory_limit = "{args.memory_limit}"\n')
            big_log(home.inbox / "big.jsonl", megabytes)
            size = (home.inbox / "big.jsonl").stat().st_size
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", PEAK, str(home.root)], capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if done.returncode:
                raise SystemExit(done.stderr)
            result = json.loads(done.stdout)
            print(f"{size / 2**20:9,.0f} {result['records']:10,} {result['peak'] / 2**20:9,.0f} "
                  f"{result['peak'] / size:10.2f} {seconds:8.1f}")


if __name__ == "__main__":
    main()
