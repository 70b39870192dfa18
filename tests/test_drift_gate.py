"""The CI accuracy-drift gate: the bundled demo model, float vs int8 (golden model), on the
synthetic TUAB corpus's eval split must not lose more than 0.005 AUROC."""
import json

import pytest

from lumamba.data.cache import prepare_cache
from lumamba.data.synth import SynthConfig, make_corpus
from lumamba.data.tuab import find_tuab_files
from lumamba.export.cli import demo_model_path
from lumamba.montages import MONTAGES
from lumamba.quant.drift import drift_report


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    make_corpus(root / "synth", SynthConfig())          # the default corpus, seed 0
    files, rejects = find_tuab_files(root / "synth")
    prepare_cache(files, root / "cache", workers=2, progress=False, rejects=rejects)
    return root / "cache"


def test_demo_model_int8_auroc_drift_is_within_0_005(cache, tmp_path):
    report = drift_report(demo_model_path(), cache, tmp_path, max_drift=0.005,
                          channels=list(MONTAGES["tcp22"]), progress=False)
    summary = {k: report[k] for k in ("auroc_drift", "label_agreement", "passed")}
    assert report["passed"], summary
    assert abs(report["int8"]["auroc"] - report["float"]["auroc"]) <= 0.005
    assert report["float"]["auroc"] > 0.9          # the demo model is a real classifier on this split
    saved = json.loads((tmp_path / "drift.json").read_text())
    assert saved["auroc_drift"] == pytest.approx(report["auroc_drift"])
    assert (tmp_path / "drift.png").stat().st_size > 10_000


@pytest.mark.slow
def test_demo_model_automatic_precision_meets_the_issue_14_goal(cache, tmp_path, capsys):
    """`lumamba-eval drift` with its defaults (all train windows, automatic precision) on the
    demo model: >= 20 dB logit SQNR on the eval split, |dAUROC| <= 0.005, <= 5 % more weight bytes
    than all-int8, the sensitivity table printed and drawn (~8 min on 2 shared cores)."""
    from lumamba.evaluate.cli import main as eval_main

    code = eval_main(["drift", "--checkpoint", str(demo_model_path()), "--data", str(cache), "--max-drift", "0.005",
                      "--channels", ",".join(MONTAGES["tcp22"]), "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "drift.json").read_text())
    plan = report["precision"]
    assert code == 0 and report["passed"], out
    assert report["logits"]["sqnr_db"] >= 20 and report["auroc_drift"] <= 0.005
    assert plan["met"] and plan["extra_flash_bytes"] <= 0.05 * plan["all_int8_weight_bytes"]
    assert "classifier.fc3" in out and "float (auto)" in out
    assert (tmp_path / "sensitivity.png").stat().st_size > 10_000
