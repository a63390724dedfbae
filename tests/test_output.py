"""Where output goes and how wide it is (issue 18, item 8): results on
stdout, progress and diagnostics on stderr (as ruff); tables fit the
terminal when stdout is one and are whole lines otherwise."""
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

from click.testing import CliRunner

from cli.common import table
from cli.main import main
from conftest import ROOT, fixture_dir

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _words(text: str) -> list[str]:
    """The characters shown, whitespace aside (wrapping may split a long
    word over lines)."""
    return sorted("".join(text.split()))


def test_table_wraps_the_widest_columns_to_fit():
    rows = [["a", "x " * 60, "rule.name", "tail words " * 5],
            ["bb", "short", "other.rule_with_a_long_name", "t"]]
    headers = ["K", "TORCH", "RULE", "MORE"]
    whole = table(headers, rows, width=0)
    assert len(whole.splitlines()) == 3  # no terminal: one line a row
    fitted = table(headers, rows, width=60)
    assert max(len(line) for line in fitted.splitlines()) <= 60
    assert _words(fitted) == _words(whole)  # nothing lost


def _on_a_terminal(args, columns=80):
    """``keras2torch ARGS`` with stdout on a pseudo-terminal ``columns``
    wide (COLUMNS unset); what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ,
                struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args],
                            cwd=ROOT, stdout=slave, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    proc.wait(timeout=300)
    os.close(master)
    return ANSI.sub("", shown.decode().replace("\r\n", "\n"))


def test_rules_and_inspect_fit_an_80_column_terminal():
    model = str(fixture_dir("k3_small_cnn") / "model.keras")
    for args in (["rules"], ["inspect", model]):
        piped = subprocess.run([sys.executable, "-m", "cli.main", *args],
                               cwd=ROOT, capture_output=True, text=True)
        assert max(len(line) for line in piped.stdout.splitlines()) > 80
        shown = _on_a_terminal(args)
        assert max(len(line) for line in shown.splitlines()) <= 80, args
        assert _words(shown) == _words(piped.stdout)


def test_results_on_stdout_diagnostics_on_stderr(tmp_path):
    model = fixture_dir("k3_small_cnn") / "model.keras"
    r = CliRunner().invoke(main, ["convert", str(model), "-o",
                                  str(tmp_path / "port")])
    assert r.exit_code == 0
    assert r.stdout.startswith(f"wrote {tmp_path / 'port'}/ (SmallCnn")
    assert r.stderr == ""
    r = CliRunner().invoke(main, ["convert", str(model), "-o",
                                  str(tmp_path / "port")])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ")
