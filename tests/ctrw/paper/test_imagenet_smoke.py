"""The imagenet suite's smoke version runs: its sub-job (the paper's ResNet50 recipe at a few
images) trains and is evaluated with its PGD-10/50 stand-ins on a tiny ImageFolder made here,
and its table assembles from those rows. Slow on a CPU (ResNet50 at 224 x 224): about a minute."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ctrw.data import load_data
from ctrw.jobs import run_evaluation, run_training
from ctrw.paper import SuiteRequest, assemble_suite, expand_suite

pytestmark = pytest.mark.slow


def tiny_image_folder(root: Path, *, classes: int = 2, train: int = 6, val: int = 3, side: int = 40) -> Path:
    """``root/train/<class>/*.png`` and ``root/val/<class>/*.png``: random RGB images."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(side, side, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_image_folder_subsets(tmp_path: Path) -> None:
    cfg = expand_suite(SuiteRequest(suite="imagenet", smoke=True))[0].config
    assert cfg is not None
    data_cfg = cfg.data.model_copy(update={"root": str(tiny_image_folder(tmp_path))})
    data = load_data(data_cfg.model_copy(update={"train_subset": 5, "test_subset": 4}))
    assert (len(data.train), len(data.test), data.num_classes, data.input_shape) == (5, 4, 2, (3, 224, 224))
    assert len(load_data(data_cfg.model_copy(update={"train_subset": None})).train) == 12


def test_imagenet_smoke_sub_job_trains_evaluates_and_assembles(tmp_path: Path) -> None:
    req = SuiteRequest(suite="imagenet", smoke=True)
    root = tiny_image_folder(tmp_path / "data")
    results = {}
    for job in expand_suite(req):
        assert job.config is not None and job.config.evaluation is not None
        cfg = job.config.model_copy(update={"data": job.config.data.model_copy(update={"root": str(root)})})
        summary = run_training(cfg, run_dir=tmp_path / job.key.replace("/", "_"))
        out = run_evaluation(Path(summary["last_checkpoint"]), cfg.evaluation, cfg)
        results[job.key] = {"status": "succeeded", "rows": out["rows"]}
    table = assemble_suite(req, results).tables["imagenet"]
    assert [r.labels["method"] for r in table.rows] == ["baseline", "CTRW (ours)"]
    for row in table.rows:
        assert row.complete and all(c.ours is not None and c.n == 4 for c in row.cells.values())
    assert table.rows[1].cells["pgd50"].paper == 60.16
