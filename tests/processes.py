"""Start several Python processes that do their work at the same moment (after their imports)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Prepended to each script: import, say "ready", wait for "go" on stdin.
READY_GO = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"


def run_together(script: str, args_per_process: list[list[str]], timeout: float = 180.0) -> list[str]:
    """Run `script` once per argument list; all start their work together. Returns each one's stdout.

    The script's imports come before the marker line `# --- go ---`; its work after it.
    """
    head, marker, body = script.partition("# --- go ---\n")
    assert marker, "the script needs a '# --- go ---' line between its imports and its work"
    source = head + READY_GO + body
    procs = [
        subprocess.Popen([sys.executable, "-c", source, *args], cwd=ROOT, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in args_per_process
    ]
    try:
        for proc in procs:  # every process has imported everything
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", f"a process failed before it was ready: {proc.communicate()[1][-3000:]}"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        deadline = time.monotonic() + timeout
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, f"a process failed (exit {proc.returncode}):\n{err[-3000:]}"
            outputs.append(out)
        return outputs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
