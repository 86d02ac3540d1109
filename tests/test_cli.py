"""The command line: runs, listings, and every kind of bad config refused with exit 2 and one message."""

import json
from pathlib import Path

import pytest
import yaml

from meanfield_jax.cli import main
from meanfield_jax.config import ConfigError, apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[1]
FIG1 = ROOT / "configs" / "fig1_moments.yaml"


def _write(tmp_path, text, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _fig1_with(tmp_path, section, key, value):
    raw = yaml.safe_load(FIG1.read_text())
    raw.setdefault(section, {})[key] = value
    return _write(tmp_path, yaml.safe_dump(raw))


def test_run_writes_figures_metrics_and_config(tmp_path):
    out = tmp_path / "fig1"
    assert main(["run", str(FIG1), "--out", str(out), "--set", "quick=true", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["passed"] and metrics["checks"]
    assert all(c["passed"] for c in metrics["checks"].values())
    assert {"jax", "meanfield_jax"} <= set(metrics["versions"])
    assert (out / "fig1_moments.png").stat().st_size > 10_000
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["quick"] is True and resolved["model"]["layers"] == 500
    assert (out / "run.log").read_text().count("PASS") == len(metrics["checks"])


def test_non_empty_out_is_refused_and_nothing_is_touched(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "metrics.json").write_text("precious")
    assert main(["run", str(FIG1), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already holds results" in err and "--overwrite" in err and "Traceback" not in err
    assert (out / "metrics.json").read_text() == "precious"
    assert main(["run", str(FIG1), "--out", str(out), "--overwrite", "--set", "quick=true", "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["passed"]


def test_list_shows_each_config_with_its_description(capsys):
    assert main(["list", "--dir", str(ROOT / "configs")]) == 0
    out = capsys.readouterr().out
    assert "fig1_moments.yaml" in out and "Fig. 1" in out


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("solver", "cells", -5, "solver.cells: got -5; allowed: an integer >= 2"),
        ("solver", "cells", 0, "solver.cells: got 0"),
        ("model", "layers", 0, "model.layers: got 0; allowed: an integer >= 1"),
        ("model", "diffusion", -1.0, "model.diffusion: got -1.0; allowed: a number >= 0"),
        ("model", "activation", "softplus", "model.activation: got 'softplus'; allowed: one of"),
        ("solver", "scheme", "lax_wendroff", "solver.scheme: got 'lax_wendroff'"),
        ("solver", "domain", [[3.0, 1.0]], "solver.domain: got [[3.0, 1.0]]; allowed: a list of [lo, hi]"),
        ("solver", "cfl", 1.5, "solver.cfl: got 1.5; allowed: a number in (0, 1]"),
        ("model", "T", "long", "model.T: got 'long'; allowed: a finite number > 0"),
        ("model", "layers", 2.5, "model.layers: got 2.5"),
        ("data", "colour", "red", "unknown key 'data.colour'; allowed keys in data:"),
    ],
)
def test_bad_values_exit_2_naming_the_key(tmp_path, capsys, section, key, value, message):
    path = _fig1_with(tmp_path, section, key, value)
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_unknown_top_level_key_and_missing_sections(tmp_path, capsys):
    path = _write(tmp_path, FIG1.read_text() + "\nextra: 1\n")
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "unknown key 'extra'" in capsys.readouterr().err
    path = _write(tmp_path, "name: x\nexperiment: moments\n", "nomodel.yaml")
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "model.W and model.b are required" in capsys.readouterr().err


def test_malformed_yaml_names_file_and_line(tmp_path, capsys):
    path = _write(tmp_path, "name: x\nmodel: {W: [[1.0], b: 2}\n")
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"malformed YAML in {path}:2:" in err


def test_missing_file_and_unknown_experiment(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "config file not found" in capsys.readouterr().err
    path = _write(tmp_path, FIG1.read_text().replace("experiment: moments", "experiment: teleport"))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "experiment: got 'teleport'; allowed: one of" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("solver.cellz=3", "--set: unknown key 'solver.cellz'"),
        ("solvr.cells=3", "--set: unknown section 'solvr'"),
        ("solver.cells=-1", "solver.cells: got -1"),
        ("cells", "--set expects section.key=value"),
    ],
)
def test_bad_overrides(tmp_path, capsys, override, message):
    assert main(["run", str(FIG1), "--out", str(tmp_path / "o"), "--set", override]) == 2
    assert message in capsys.readouterr().err


def test_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_overrides_are_typed_and_revalidated():
    cfg = apply_overrides(load_config(FIG1), ["solver.cells=800", "model.T=2", "model.feedback=null"])
    assert cfg.solver.cells == 800 and cfg.model.T == 2.0 and cfg.model.feedback is None
    with pytest.raises(ConfigError, match=r"solver\.cfl"):
        apply_overrides(cfg, ["solver.cfl=0"])


def test_same_seed_and_config_give_bitwise_identical_results(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["run", str(FIG1), "--out", str(out), "--set", "quick=true", "--quiet"]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        runs.append((metrics["checks"], metrics["metrics"], (out / "fig1_moments.png").read_bytes()))
    assert runs[0] == runs[1]


FAKE_SUITE = """
import json, sys
from pathlib import Path
stem = Path(__file__).stem
out = Path(__file__).parent / "results" / f"{stem}-run.json"
out.write_text(json.dumps({"argv": sys.argv[1:], "goals": {"suite": stem}}))
"""


def test_bench_passes_its_options_to_each_suite_and_summarises_them(tmp_path, monkeypatch, capsys):
    from meanfield_jax import bench

    (tmp_path / "results").mkdir()
    for suite in bench.SUITES:
        (tmp_path / f"{suite}.py").write_text(FAKE_SUITE)
    monkeypatch.setattr(bench, "benchmarks_folder", lambda: tmp_path)
    summary = tmp_path / "summary.json"
    assert main(["bench", "--quick", "--keep-freed-memory", "--out", str(summary)]) == 0
    written = json.loads(summary.read_text())
    assert written["quick"] is True and written["keep_freed_memory"] is True
    for suite in bench.SUITES:
        entry = written["suites"][suite]
        assert entry["status"] == 0 and entry["goals"] == [{"suite": suite}]
        run = json.loads((tmp_path / "results" / f"{suite}-run.json").read_text())
        assert run["argv"] == ["--quick", "--keep-freed-memory"]
    # an existing --out is refused before any suite runs
    assert main(["bench", "--out", str(summary)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_bench_out_gets_its_folder_before_the_suites_run_and_its_summary_is_never_lost(
    tmp_path, monkeypatch, capsys
):
    from meanfield_jax import bench

    (tmp_path / "results").mkdir()
    for suite in bench.SUITES:
        (tmp_path / f"{suite}.py").write_text(FAKE_SUITE)
    monkeypatch.setattr(bench, "benchmarks_folder", lambda: tmp_path)
    # a folder that does not exist yet is made, and the summary lands in it
    summary = tmp_path / "new" / "deeper" / "summary.json"
    assert main(["bench", "--out", str(summary)]) == 0
    assert set(json.loads(summary.read_text())["suites"]) == set(bench.SUITES)
    # a "folder" that is a file is refused before any suite runs
    (tmp_path / "a_file").write_text("kept")
    for path in (tmp_path / "results").glob("*.json"):
        path.unlink()
    assert main(["bench", "--out", str(tmp_path / "a_file" / "summary.json")]) == 2
    assert "a_file" in capsys.readouterr().err
    assert not list((tmp_path / "results").glob("*.json"))
    assert (tmp_path / "a_file").read_text() == "kept"
    # a summary that cannot be written at the end (its file appeared meanwhile) is printed, not lost
    late = tmp_path / "late.json"
    suite_source = FAKE_SUITE + f"\nPath({str(late)!r}).write_text('theirs')\n"
    (tmp_path / f"{bench.SUITES[-1]}.py").write_text(suite_source)
    assert main(["bench", "--out", str(late)]) == 1
    captured = capsys.readouterr()
    assert "cannot write the summary" in captured.err
    assert set(json.loads(captured.out[captured.out.index("{"):])["suites"]) == set(bench.SUITES)
    assert late.read_text() == "theirs"
