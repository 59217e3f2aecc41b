"""The three tutorials run end to end offline (short schedules, fallback data) and reach their asserts."""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tutorials")
NOTEBOOKS = ["01.resnet18_cifar10.ipynb", "02.carnx2_super_resolution.ipynb", "03.qvgg7_cifar10.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_offline(name, tmp_path, monkeypatch):
    monkeypatch.setenv("OTO_TUTORIAL_OUT", str(tmp_path))
    notebook = nbformat.read(os.path.join(TUTORIALS, name), as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": TUTORIALS}})
    client.execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.get("outputs", []))
    assert "data:" in printed
    assert any(path.endswith("_compressed.pt") for path in os.listdir(tmp_path))
