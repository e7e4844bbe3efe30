"""Downloading data is the operator's setting, not a job's; files in the data directory are
checked (md5) before torchvision unpickles them."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

from ctrw.config import DataConfig, TrainConfig
from ctrw.data import DataNotFoundError, download_allowed, load_data


class _Payload:
    """Unpickling this would create ``marker`` (what a malicious data file could do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path(self.marker).touch, ())


def test_a_job_cannot_ask_for_a_download() -> None:
    with pytest.raises(ValidationError, match="CTRW_ALLOW_DOWNLOAD") as e:
        TrainConfig.model_validate({"data": {"download": True}})
    assert e.value.errors()[0]["loc"] == ("data", "download")
    # configs stored before keep validating (and keep their hash): the field stays, always false
    assert TrainConfig.model_validate({"data": {"download": False}}).data.download is False
    assert TrainConfig.model_json_schema()["$defs"]["DataConfig"]["properties"]["download"]["const"] is False


@pytest.mark.parametrize(("value", "allowed"), [(None, False), ("0", False), ("false", False), ("1", True),
                                                 ("true", True), ("YES", True)])  # fmt: skip
def test_download_is_an_operator_setting(
    monkeypatch: pytest.MonkeyPatch, value: str | None, allowed: bool
) -> None:
    if value is None:
        monkeypatch.delenv("CTRW_ALLOW_DOWNLOAD", raising=False)
    else:
        monkeypatch.setenv("CTRW_ALLOW_DOWNLOAD", value)
    assert download_allowed() is allowed


def test_missing_cifar_names_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CTRW_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(DataNotFoundError, match="CTRW_ALLOW_DOWNLOAD=1"):
        load_data(DataConfig(dataset="cifar10", root=str(tmp_path)))


def test_a_tampered_cifar_file_is_refused_before_it_is_unpickled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CTRW_ALLOW_DOWNLOAD", raising=False)
    marker = tmp_path / "unpickled"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta"):  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(DataNotFoundError, match="corrupted"):
        load_data(DataConfig(dataset="cifar10", root=str(tmp_path)))
    assert not marker.exists()
