"""EventStorage, the writers and the logger set-up."""

import json
import logging

import pytest
from _engine_fakes import engine_test_env, uper_logs  # noqa: F401

from uper_parsing.utils.events import CommonMetricPrinter, EventStorage, JSONWriter
from uper_parsing.utils.logger import setup_logger


def test_storage_smoothing_windows():
    with EventStorage() as storage:
        for it in range(30):
            storage.iter = it
            storage.put_scalar("loss", float(it))
            storage.put_scalar("lr", 0.1 * it, smoothing_hint=False)
        storage.put_scalars(**{"val/acc": 0.5}, smoothing_hint=False)
        smoothed = storage.latest_with_smoothing_hint(window_size=20)
        assert smoothed["loss"] == (storage.history("loss").median(20), 29)
        assert storage.history("loss").median(20) == pytest.approx(19.5)  # median of 10..29
        assert storage.history("loss").avg(5) == pytest.approx(27.0)
        assert smoothed["lr"] == (pytest.approx(2.9), 29)
        assert storage.latest()["val/acc"] == (0.5, 29)
        with pytest.raises(ValueError, match="smoothing_hint"):
            storage.put_scalar("lr", 1.0)
        with pytest.raises(KeyError):
            storage.history("missing")


def test_json_writer_appends_one_line_per_new_iteration(tmp_path):
    path = tmp_path / "metrics.json"
    writer = JSONWriter(str(path), window_size=2)
    with EventStorage() as storage:
        for it in range(3):
            storage.iter = it
            storage.put_scalars(loss_x=float(it), data_time=0.5)
        storage.put_scalar("lr", 0.01, smoothing_hint=False)
        writer.write()
        writer.write()  # nothing new: no line
        storage.iter = 3
        storage.put_scalar("sem_seg/mIoU", 42.0, smoothing_hint=False)
        writer.write()
    writer.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"iteration": 2, "loss_x": 1.5, "data_time": 0.5, "lr": 0.01},  # median of last 2
        {"iteration": 3, "sem_seg/mIoU": 42.0},
    ]
    JSONWriter(str(path)).close()  # a new writer appends, never truncates
    assert len(path.read_text().splitlines()) == 2


def test_common_metric_printer_line(uper_logs):  # noqa: F811
    printer = CommonMetricPrinter(max_iter=100)
    with EventStorage() as storage:
        for it in range(5):
            storage.iter = it
            storage.put_scalars(total_loss=1.0, loss_x=0.75, time=0.5, data_time=0.1)
            storage.put_scalar("lr", 0.02, smoothing_hint=False)
        printer.write()
        storage.iter = 100
        printer.write()  # after training: nothing
    messages = [r.getMessage() for r in uper_logs if "iter:" in r.getMessage()]
    assert len(messages) == 1
    line = messages[0]
    for part in ("eta: 0:00:47", "iter: 4", "total_loss: 1", "loss_x: 0.75", "time: 0.5000"):
        assert part in line
    assert "data_time: 0.1000" in line and "lr: 0.02" in line


def test_setup_logger_files_per_rank_and_no_duplicates(tmp_path, capsys):
    name = "uper_parsing_test_logger"
    logger = setup_logger(str(tmp_path), distributed_rank=0, name=name)
    logger = setup_logger(str(tmp_path), distributed_rank=0, name=name)  # again: replaces
    logger.info("hello")
    assert capsys.readouterr().out.count("hello") == 1
    assert (tmp_path / "log.txt").read_text().count("hello") == 1

    rank1 = setup_logger(str(tmp_path), distributed_rank=1, name=name + "_r1")
    rank1.info("from rank 1")
    assert "from rank 1" not in capsys.readouterr().out  # no console on rank > 0
    assert "from rank 1" in (tmp_path / "log.txt.rank1").read_text()
    for n in (name, name + "_r1"):
        for handler in list(logging.getLogger(n).handlers):
            logging.getLogger(n).removeHandler(handler)
            handler.close()
