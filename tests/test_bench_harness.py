"""benchmarks/harness.py and run_all's repeats: real child processes, real CPU time (issue 16, item 1)."""
import json
import sys
import textwrap

from benchmarks import harness, run_all

CHILD = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, {root!r})
    from benchmarks import harness

    def run_case(case):
        with open(case["log"], "a") as fh:
            fh.write(case["name"] + "\\n")
        with harness.Meter() as m:
            end = time.process_time() + case["burn"]
            while time.process_time() < end:
                pass
        return {{"cpu_s": m.cpu_s, "wall_s": m.wall_s}}

    sys.exit(harness.child_main(run_case))
''')


def test_cases_run_in_their_own_processes_interleaved_with_cpu_time(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(harness.Path(harness.__file__).resolve().parent.parent)))
    log = tmp_path / "order.log"
    cases = [{"name": "a", "burn": 0.05, "log": str(log)}, {"name": "b", "burn": 0.15, "log": str(log)}]
    runs = harness.run_interleaved(script, cases, repeats=harness.MIN_REPEATS)
    # Interleaved, and rotated each repeat: a, b | b, a | a, b ...
    assert log.read_text().split() == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]
    a, b = runs
    assert [r["repeat"] for r in a.results] == [0, 1, 2, 3, 4]
    assert min(a.values("cpu_s")) >= 0.05 and min(b.values("cpu_s")) >= 0.15
    assert all(r["child_cpu_s"] >= r["cpu_s"] for r in a.results + b.results)  # the whole child, from its rusage
    assert a.stat("cpu_s").median < b.stat("cpu_s").median
    assert all(r["peak_rss_mb"] > 1 for r in a.results)


def test_stat_flags_a_spread_over_ten_percent():
    steady, noisy = harness.Stat.of([1.0, 1.02, 0.99, 1.01, 1.0]), harness.Stat.of([1.0, 1.3, 1.0, 1.0, 1.0])
    assert not steady.noisy and "noisy" not in steady.cell()
    assert noisy.noisy and abs(noisy.spread - 0.3) < 1e-9 and noisy.cell().endswith("**noisy**")
    assert harness.Stat.of([2.0]).noisy  # one run says nothing about the spread
    assert harness.ratio_stat([2.0, 4.0], [1.0, 1.0]).median == 3.0  # repeat by repeat


def test_run_all_reports_every_numeric_figure_over_the_repeats(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    runs = [{"repeat": r, "cpu_s": 1.0 + r / 100, "wall_s": 2.0, "results": {"rows": [{"rate": 100.0 + 20 * (r == 2)}],
                                                                              "name": "x", "ok": True}}
            for r in range(5)]
    run_all.repeats_report("demo", harness.Report("demo", repeats=5), runs)
    md = (tmp_path / "demo_repeats.md").read_text()
    assert "`rows[0].rate` | 100 (min 100, spread 20%) **noisy**" in md
    assert "script CPU s | 1.02 (min 1.00, spread 4%) |" in md and "`ok`" not in md
    assert "Load average" in md and json.loads((tmp_path / "demo_repeats.json").read_text())["repeats"] == 5
    assert run_all.on_harness(harness.Path(run_all.__file__).with_name("ingest.py"))
    assert not run_all.on_harness(harness.Path(run_all.__file__).with_name("spans.py"))
    assert sys.modules["benchmarks.harness"] is harness
