"""Keras worker processes end with what started them (issue 18, item 9),
and parallel verification shares the CPUs instead of oversubscribing
them."""
import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import HAS_TF, ROOT


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next(ln for ln in f if ln.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return True
    return "Z" in state.split()[1]  # exited, not yet reaped


@pytest.mark.keras
@pytest.mark.skipif(not HAS_TF, reason="TensorFlow not installed")
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_keras_server_ends_with_its_parent_even_if_its_stdin_stays_open():
    """The session that started a Keras server dies without closing it,
    and a process it forked still holds the server's stdin: the server
    ends anyway."""
    script = textwrap.dedent("""
        import os, sys, time
        from migrate.verify import KerasServer
        server = KerasServer(3)
        server._start()
        child = os.fork()
        if child == 0:              # holds the pipe to the server's stdin
            os.close(1)
            os.close(2)
            time.sleep(120)
            os._exit(0)
        print(server.proc.pid, child, flush=True)
        time.sleep(2)
        os._exit(0)                 # no close(), no atexit
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    pid, child = map(int, proc.stdout.split())
    deadline = time.monotonic() + 90  # TensorFlow may still be importing
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    try:
        assert _gone(pid), "the Keras server outlived its parent"
    finally:
        for p in (pid, child):
            if not _gone(p):
                os.kill(p, 9)


def test_pool_workers_share_the_cpus_between_their_keras_processes():
    code = ("import os, migrate.batch as b; b._worker_init(2); "
            "print(os.environ['KERAS2TORCH_KERAS_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert int(out) == max(1, (os.cpu_count() or 1) // 2)


def test_application_builders_end_with_their_module():
    text = (ROOT / "tests" / "test_applications.py").read_text()
    assert '@pytest.fixture(scope="module")\ndef builders(' in text


def test_parallel_verify_says_why_it_is_no_faster(monkeypatch, capsys):
    from cli.common import parallel_note
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    parallel_note(4, True, 10)
    assert capsys.readouterr().err == (
        "note: -j 4 with --verify on 2 CPU(s): 4 Keras processes take "
        "turns on 2 CPU(s), no faster than -j 2\n")
    parallel_note(2, True, 2)
    assert "each worker starts TensorFlow" in capsys.readouterr().err
    for args in ((2, True, 10), (4, False, 10), (1, True, 10),
                 (0, True, 1)):
        parallel_note(*args)
        assert capsys.readouterr().err == ""
