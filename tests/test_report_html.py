"""``report.html``: written by ``convert --report html`` and ``inspect
--html``, self-contained, and rendered by a real headless browser.

The browser test needs Debian's ``chromium`` (``apt-get install
chromium``; ``.ci/run`` installs it).  It is skipped without it, or fails
where ``$KERAS2TORCH_REQUIRE`` names ``browser`` (CI sets it).  Its
screenshot is kept in the test's temporary directory, and copied to
``$KERAS2TORCH_ARTIFACTS`` when set.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

import migrate
from cli.main import main
from migrate.html import STATUS_COLOURS, render_html
from migrate.inspect import inspect_model

from conftest import fixture_dir, require

CNN = fixture_dir("k3_small_cnn") / "model.keras"
CUSTOM = fixture_dir("k3_custom_layers") / "model.keras"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def fake_parity(table, diverge="pool1"):
    """Per-layer figures as verify(per_layer=True) gives them, with one
    diverging layer (no TensorFlow needed)."""
    rows, first = [], None
    for r in table["layers"]:
        bad = r["node"] == diverge or (first is not None)
        row = {"node": r["node"], "keras_name": r["keras_name"],
               "class_name": r["class_name"], "torch_name": r["torch_name"],
               "shape": r["output_shapes"][0], "status":
               "diverged" if bad else "ok",
               "max_abs_err": 0.25 if bad else 1e-7, "max_rel_err": 0.1}
        if bad and first is None:
            first = row
        rows.append(row)
    return {"atol": 1e-4, "max_abs_err": 0.25, "max_rel_err": 0.1,
            "passed": False, "outputs": [{"name": "logits"}],
            "layers": rows, "first_divergence": first,
            "per_layer_note": None}


def assert_self_contained(page: str):
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://|<script|<link|<img|@import|url\(",
                         page, re.I)


def test_convert_report_html(tmp_path):
    out = tmp_path / "port"
    r = run("convert", CNN, "-o", out, "--report", "html")
    assert r.exit_code == 0, r.output
    page = (out / "report.html").read_text()
    assert_self_contained(page)
    assert "small_cnn" in page and "<code>SmallCnn</code>" in page
    assert page.count('<span class="badge"') == 9 + len(STATUS_COLOURS)
    assert "nn.Conv2d(3, 8, kernel_size=3" in page
    assert "not measured" in page  # no --verify
    assert sorted(p.name for p in out.iterdir()) == [
        "conversion.json", "model.py", "model.safetensors", "report.html"]


def test_batch_report_html(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(CNN, d / "a.keras")
    shutil.copy(fixture_dir("k3_text_mlp") / "model.keras", d / "b.keras")
    r = run("convert", d, "-o", tmp_path / "out", "--report", "html")
    assert r.exit_code == 0, r.output
    for name in ("a", "b"):
        assert_self_contained((tmp_path / "out" / name /
                               "report.html").read_text())


def test_unsupported_layers_section(tmp_path):
    r = run("inspect", CUSTOM, "--html", tmp_path / "r.html")
    assert r.exit_code == 1
    page = (tmp_path / "r.html").read_text()
    assert_self_contained(page)
    section = page.split("<h2>Unsupported layers</h2>")[1]
    assert section.count("<tr><td><code>") == 3
    assert "no rule for this layer class" in section
    assert "3 layer(s) cannot be converted" in page
    for status, n in [("unsupported", 3), ("blocked", 1)]:
        assert page.count(f'style="background:{STATUS_COLOURS[status][0]};'
                          ) == n


def test_names_are_escaped():
    d = fixture_dir("k3_hostile_names")
    model = next(d.glob("model.*"))
    table = inspect_model(model).to_dict()
    page = render_html(table)
    assert_self_contained(page)
    for row in table["layers"]:
        if "<" in row["node"] or "&" in row["node"]:
            assert row["node"] not in page


def test_divergence_is_flagged():
    table = inspect_model(CNN).to_dict()
    page = render_html(table, parity=fake_parity(table))
    assert "First layer whose output diverges: <code>pool1</code>" in page
    assert page.count('class="first"') == 1
    assert "Parity with Keras FAILED" in page


def _png_pixels(path: Path):
    """(width, height, rows of RGB(A) bytes) of an 8-bit PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + size]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + size
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and not interlace
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else
                                      b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def _colour_count(rows, bpp, hex_colour: str) -> int:
    rgb = bytes.fromhex(hex_colour.lstrip("#"))
    n = 0
    for row in rows:
        for x in range(0, len(row), bpp):
            if row[x:x + 3] == rgb:
                n += 1
    return n


def _chromium(tmp_path, *args):
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-quic", "--disable-background-networking",
           "--disable-component-update",
           "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_headless_chromium_renders_the_report(tmp_path):
    require("browser", CHROMIUM is not None, "apt-get install chromium")
    table = inspect_model(CNN).to_dict()
    conv = migrate.convert(CNN)
    page = tmp_path / "report.html"
    page.write_text(render_html(table, conv.report, fake_parity(table)))
    url = page.as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<tr") == 9 + 1 + 3  # layers, header, ports
    assert "First layer whose output diverges" in dom.stdout
    shot = tmp_path / "report.png"
    proc = _chromium(tmp_path, "--window-size=1400,1000",
                     "--hide-scrollbars", f"--screenshot={shot}", url)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    width, height, bpp, rows = _png_pixels(shot)
    assert (width, height) == (1400, 1000)
    # the status colours are on screen: green rows, then red from pool1 on
    for status in ("matches", "diverges"):
        background, accent = STATUS_COLOURS[status]
        assert _colour_count(rows, bpp, background) > 5000, status
        assert _colour_count(rows, bpp, accent) > 200, status
    artifacts = os.environ.get("KERAS2TORCH_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "report.png")
        shutil.copy(page, Path(artifacts) / "report.html")
    json.dumps(table)  # the table is plain data
