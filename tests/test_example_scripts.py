"""The scripts under experiments/ (what users copy) run and print the numbers they promise."""

import re
import runpy
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "experiments"


def _run(name, tmp_path, monkeypatch, capsys, *args):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(SCRIPTS / name), run_name="__main__")
    return capsys.readouterr().out


def _numbers(pattern, text):
    return [float(v) for v in re.search(pattern, text).groups()]


def test_fokker_planck_fit_script_recovers_the_closed_form(tmp_path, monkeypatch, capsys):
    out = _run("fokker_planck_fit.py", tmp_path, monkeypatch, capsys)
    w, b = _numbers(r"fitted w = (\S+), b = (\S+)", out)
    w0, b0 = _numbers(r"closed form w = (\S+), b = (\S+);", out)
    assert w == pytest.approx(w0, rel=0.01) and b == pytest.approx(b0, rel=0.01)


def test_novel_target_script_fits_the_line(tmp_path, monkeypatch, capsys):
    out = _run("novel_target.py", tmp_path, monkeypatch, capsys)
    w, b = _numbers(r"fitted w = (\S+), b = (\S+)", out)
    w0, b0 = _numbers(r"Euler layers\): w = (\S+), b = (\S+)", out)
    assert abs(w - w0) < 0.02 and abs(b - b0) < 0.02  # noise 0.1 on 2000 points


def test_vehicles_script_keeps_half_the_mass_left_of_five(tmp_path, monkeypatch, capsys):
    out = _run("vehicles_kinetic.py", tmp_path, monkeypatch, capsys)
    assert "[5.] repelling" in out and "mass left of 5 at t = 0, 1, 2: [0.5 0.5 0.5]" in out


def test_moments_script_writes_its_figure_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    out = _run("moments_fig1.py", tmp_path, monkeypatch, capsys, "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    assert all(float(v) < 0.2 for v in re.findall(r"max \|m - exact\| = (\S+)", out))
    with pytest.raises(SystemExit, match="exists"):
        _run("moments_fig1.py", tmp_path, monkeypatch, capsys, "fig.png")
