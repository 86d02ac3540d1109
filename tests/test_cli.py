"""The command line: runs, listings, and every kind of bad config refused with exit 2 and one message."""

import json
from pathlib import Path

import pytest
import yaml

from meanfield_jax.cli import main
from meanfield_jax.config import ConfigError, apply_overrides, load_config, parse_config

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
        ("solver", "domain", [1.0, 2.0], "solver.domain: got [1.0, 2.0]; allowed: a list of [lo, hi]"),
        ("solver", "domain", [[[1.0, 2.0], [3.0, 4.0]]], "solver.domain: got [[[1.0, 2.0], [3.0, 4.0]]]"),
        ("solver", "save_at", [2.0, 1.0], "solver.save_at: got [2.0, 1.0]; allowed: a strictly increasing"),
        ("solver", "save_at", [[1.0]], "solver.save_at: got [[1.0]]"),
        ("model", "W", [[1.0, 2.0], [3.0]], "model.W, model.b: got W=[[1.0, 2.0], [3.0]], b=[0.0]; allowed:"),
        ("model", "b", [[[0.0]]], "model.W, model.b: got W=[[-1.0]], b=[[[0.0]]]"),
        ("data", "low", 9.0, "data.low, data.high: got 9.0, 8.0; allowed: low < high"),
        ("output", "plots", ["fig1_moment"], "output.plots: got 'fig1_moment'; allowed: the figures of "
         "experiment 'moments', fig1_moments"),
        ("output", "plots", [""], "output.plots: got ''"),
    ],
)
def test_bad_values_exit_2_naming_the_key(tmp_path, capsys, section, key, value, message):
    path = _fig1_with(tmp_path, section, key, value)
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("\ndata: 0\n", "data: expected a mapping of keys, got int"),
        ("\ndata: []\n", "data: expected a mapping of keys, got list"),
        ("\nseed: 4294967296\n", "seed: got 4294967296; allowed: an integer from 0 to 2**32 - 1"),
        ("\nname: again\n", "the key 'name' is given twice"),
    ],
)
def test_sections_seeds_and_keys_given_twice_exit_2(tmp_path, capsys, text, message):
    """A section given as 0 or [] was taken for the defaults, a seed of 2**63 failed in the PRNG with a
    traceback, and YAML kept the last of a key given twice."""
    raw = yaml.safe_load(FIG1.read_text())
    for key in ("data", "seed"):
        raw.pop(key)
    path = _write(tmp_path, yaml.safe_dump(raw, sort_keys=False) + text)
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("config", "override", "message"),
    [
        ("fig9_fokker_planck", "model.W=[[1.0]]", "model.W: got [[1.0]]; allowed: a weight w < 0"),
        ("fig9_fokker_planck", "model.diffusion=0", "model.diffusion: got 0.0; allowed: a number > 0"),
        ("fig9_fokker_planck", "solver.scheme=muscl", "scheme: got 'muscl'; allowed: one of chang_cooper"),
        ("fig9_fokker_planck", "solver.domain=[[-6.0, 10.0], [0.0, 1.0]]", "allowed: 1 [lo, hi] pair"),
        ("fig9_fokker_planck", "data.kind=gaussian", "kind: got 'gaussian'; allowed: uniform or vehicles"),
        ("fig4_vehicles_kinetic", "solver.domain=null", "solver.domain: got None; allowed: 1 [lo, hi] pair"),
        ("fig4_vehicles_kinetic", "model.W=[[0.0]]", "model.W: got [[0.0]]; allowed: a weight w > 0"),
        ("fig4_vehicles_kinetic", "solver.scheme=chang_cooper", "allowed: one of upwind, muscl, cweno3"),
        ("fig7_regression_1d", "model.b=[0.0]", "model.b: got [0.0]; allowed: a bias b != 0"),
        ("fig7_regression_1d", "model.activation=tanh", "model.activation: got 'tanh'; allowed: identity"),
        ("fig6_regression_2d", "solver.domain=[[-7.0, 2.0]]", "allowed: 2 [lo, hi] pairs"),
        ("fig6_regression_2d", "model.W=[[1.0]]", "model.W, model.b: got W=[[1.0]]"),
        ("fig1_moments", "data.kind=table1", "kind: got 'table1'; allowed: uniform, vehicles or"),
        ("fig1_moments", "model.activation=tanh", "model.activation: got 'tanh'; allowed: identity"),
        ("fig8_novel_target", "data.noise=0", "data.noise: got 0.0; allowed: a number > 0"),
        ("fig6_regression_2d", "data.kind=gaussian", "data.kind: got 'gaussian'; allowed: regression"),
        ("fig6_regression_2d", "data.high=5.0", "data.high: got [0.0, 5.0]; allowed: a range inside"),
        ("fig7_regression_1d", "data.high=3.0", "allowed: a range inside the grid's [-150.0, 2.0]"),
        ("fig7_regression_1d", "solver.cfl=0.8", "cfl: got 0.8; allowed: a number in (0, 0.5] for scheme"),
    ],
)
def test_what_an_experiment_cannot_use_exits_2_before_any_output(tmp_path, capsys, config, override, message):
    """Each of these failed inside the experiment with a traceback (a division by w = 0, a missing or
    2-D domain unpacked, a scheme of the other equation), some after seconds of work, or ran on a cut
    domain and exited 0."""
    out = tmp_path / "x"
    assert main(["run", str(ROOT / "configs" / f"{config}.yaml"), "--out", str(out), "--set", override,
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # the folder the run would have made is gone again


def _fake_experiment(monkeypatch, run):
    """Register ``run`` as experiment 'moments' with one figure, 'fig1_moments'."""
    from meanfield_jax import experiments

    monkeypatch.setitem(experiments.EXPERIMENTS, "moments", run)
    monkeypatch.setitem(experiments.FIGURES, "moments", ("fig1_moments",))


def test_a_failed_run_leaves_earlier_results_as_they_were(tmp_path, monkeypatch, capsys):
    """config.yaml was written before the experiment ran: a run that failed left it in a new --out (whose
    rerun was then refused) and, with --overwrite, next to the earlier run's metrics and figures."""
    from meanfield_jax.experiments import ExperimentResult

    def fails(cfg, log):
        raise ConfigError("model.W: got [[0.0]]; allowed: anything else")

    def nan_check(cfg, log):
        result = ExperimentResult(metrics={"ratio": float("inf"), "curve": [1.0, float("nan")]})
        result.check("nan_value", float("nan"), 0.0, 1.0)
        return result

    out = tmp_path / "run"
    _fake_experiment(monkeypatch, nan_check)
    assert main(["run", str(FIG1), "--out", str(out), "--quiet"]) == 1
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert metrics["checks"]["nan_value"] == {"value": None, "expected": 0.0, "tol": 1.0, "passed": False}
    assert metrics["metrics"] == {"ratio": None, "curve": [1.0, None]}
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _fake_experiment(monkeypatch, fails)
    for args in ([], ["--overwrite"]):
        assert main(["run", str(FIG1), "--out", str(out), "--quiet", "--set", "seed=7", *args]) == 2
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["run", str(FIG1), "--out", str(tmp_path / "new" / "deeper"), "--quiet"]) == 2
    assert not (tmp_path / "new").exists()  # nor the parent made for it
    assert "Traceback" not in capsys.readouterr().err


def test_a_run_that_fails_on_the_way_says_why_in_one_line(tmp_path, monkeypatch, capsys):
    def fails(cfg, log):
        raise FloatingPointError("non-finite loss at step 0")

    _fake_experiment(monkeypatch, fails)
    assert main(["run", str(FIG1), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == ("meanfield-jax: error: the run failed: FloatingPointError: non-finite loss at step 0 "
                   "(pass --traceback to see where)\n")
    assert not (tmp_path / "o").exists()
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        main(["run", str(FIG1), "--out", str(tmp_path / "o"), "--quiet", "--traceback"])


def test_an_out_that_cannot_be_made_and_a_run_out_of_memory_exit_2(tmp_path, monkeypatch, capsys):
    import jax.numpy as jnp

    (tmp_path / "file").write_text("precious")
    assert main(["run", str(FIG1), "--out", str(tmp_path / "file" / "sub"), "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "file").read_text() == "precious"

    def too_big(cfg, log):
        return jnp.zeros((10**12,)) + 1.0  # 8 TB

    _fake_experiment(monkeypatch, too_big)
    assert main(["run", str(FIG1), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: out of memory" in err and "model.layers" in err and "Traceback" not in err


def test_yaml_merge_keys_and_per_layer_weights_with_one_bias_are_configs(tmp_path, capsys):
    """The duplicate-key check must let a merge key be overridden, and the W/b rule is the field's own
    (W of L×1×1 with one bias was refused by a copy of it)."""
    raw = yaml.safe_load(FIG1.read_text())
    raw["model"]["W"] = [[[-1.0]], [[-0.5]]]
    cfg = parse_config(raw)
    assert cfg.model.W == [[[-1.0]], [[-0.5]]] and cfg.model.b == [0.0]
    override = _write(tmp_path, FIG1.read_text().replace(
        "model:   {activation: identity,", "model:   {<<: {T: 2.0, diffusion: 0.5}, activation: identity,"
    ), "merge.yaml")
    assert "<<" in override.read_text()
    cfg = load_config(override)  # the mapping's own T overrides the merged one
    assert (cfg.model.T, cfg.model.diffusion) == (5.0, 0.5)
    unhashable = _write(tmp_path, FIG1.read_text() + "\n? [a, b]\n: 1\n", "unhashable.yaml")
    assert main(["run", str(unhashable), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "found unhashable key" in err and "Traceback" not in err


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
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"config {tmp_path} is a folder; allowed: a YAML file" in capsys.readouterr().err
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(FIG1.read_bytes() + b"# caf\xe9 (Latin-1)\n")
    assert main(["run", str(latin1), "--out", str(tmp_path / "o")]) == 2
    assert f"cannot read the config {latin1}: 'utf-8' codec" in capsys.readouterr().err
    assert main(["list", "--dir", str(tmp_path)]) == 0
    assert "(unreadable: not a UTF-8 text file)" in capsys.readouterr().out
    path = _write(tmp_path, FIG1.read_text().replace("experiment: moments", "experiment: teleport"))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "experiment: got 'teleport'; allowed: one of" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("solver.cellz=3", "--set: unknown key 'solver.cellz'"),
        ("solvr.cells=3", "--set: unknown section 'solvr'"),
        ("solver.cells=-1", "solver.cells: got -1"),
        ("model.W=&a [*a]", "model.W: got [[...]]"),  # a YAML alias of the list itself
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
    cfg = apply_overrides(load_config(FIG1), ["solver.cells=800", "model.T=2", "model.feedback=null",
                                              "training.learning_rate=1e-3"])
    assert cfg.solver.cells == 800 and cfg.model.T == 2.0 and cfg.model.feedback is None
    assert cfg.training.learning_rate == 1e-3  # YAML 1.1 read 1e-3 (no dot) as a string
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
