"""Outputs get the modes the umask gives any new file (issue 18, item 1):
the temporary files and directories they are written through do not leave
their owner-only modes behind."""
import os
import stat

import pytest

import migrate
from conftest import fixture_dir
from migrate.perms import dir_mode, file_mode, umask


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o002, 0o077])
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_umask_read_without_changing_it(mask):
    assert umask() == mask
    assert umask() == mask and os.umask(mask) == mask
    assert file_mode() == 0o666 & ~mask and dir_mode() == 0o777 & ~mask


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_port_modes_follow_umask(tmp_path, mask, fmt):
    model = fixture_dir("k3_small_cnn") / "model.keras"
    with migrate.convert(model, weights_format=fmt) as conv:
        out = conv.save(tmp_path / "port")
        conv.save(out, force=True)  # replacing keeps the modes too
    assert _mode(out) == 0o777 & ~mask
    for f in out.iterdir():
        assert _mode(f) == 0o666 & ~mask, f.name


def test_batch_and_html_outputs_follow_umask(tmp_path, mask):
    model = fixture_dir("k3_small_cnn") / "model.keras"
    [r] = migrate.convert_many([model], tmp_path / "ports", report="html")
    assert r.status == "ok", r.error
    assert _mode(tmp_path / "ports") == 0o777 & ~mask
    assert _mode(r.outdir) == 0o777 & ~mask
    names = sorted(p.name for p in os.scandir(r.outdir))
    assert "report.html" in names and "model.safetensors" in names
    for name in names:
        assert _mode(os.path.join(r.outdir, name)) == 0o666 & ~mask, name
