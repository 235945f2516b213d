import io
import json
import os

from pipelines import stage_metrics
from pipelines.progress import STAGES, ProgressReporter, ProgressTail, stage_summary, status_line
from pipelines.stage_metrics import Meter

SAMPLING = next(s for s in STAGES if s.name == "sample_generators")


def test_meter_records_reach_the_tail_in_totals(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_metrics, "FLUSH_SECONDS", 3600.0)  # only timed() flushes
    meter = Meter(str(tmp_path))
    with meter.timed("sample_generators"):
        meter.count("sampled", 8)
        meter.count("sampled", 8)
    meter.count("sampled_from_cache", 4)  # pending: not yet written
    tail = ProgressTail(tmp_path)
    totals = tail.poll()
    assert totals["sampled"] == 16 and "sampled_from_cache" not in totals
    assert totals["sample_generators_ms"] >= 0
    stage_metrics.flush_all()
    assert tail.poll()["sampled_from_cache"] == 4 and tail.done(SAMPLING) == 20
    files = list(tmp_path.glob("*.jsonl"))
    assert [f.name.rsplit("-", 1)[1] for f in files] == [f"{os.getpid()}.jsonl"]


def test_the_tail_waits_for_a_line_to_be_complete(tmp_path):
    path = tmp_path / "host-1.jsonl"
    path.write_text(json.dumps({"t": 1.0, "sampled": 5}) + "\n" + '{"t": 2.0, "samp')
    tail = ProgressTail(tmp_path)
    assert tail.poll() == {"sampled": 5}
    with open(path, "a") as f:
        f.write('led": 5}\n')
    assert tail.poll() == {"sampled": 10}
    assert tail.rate(SAMPLING) == 10.0  # 10 images over the 1 s between the records


def test_status_line_gives_count_share_rate_and_eta():
    assert status_line(SAMPLING, 3400, 11200, 45.0) == \
        "sampling: 3,400/11,200 images (30%), 45.0/s, ETA 2m53s"
    assert status_line(SAMPLING, 50, None, None) == "sampling: 50 images"
    assert status_line(SAMPLING, 10, 10, 2.0) == "sampling: 10/10 images (100%), 2.0/s"


def test_reporter_logs_a_line_per_stage_that_moved(tmp_path):
    (tmp_path / "h-1.jsonl").write_text(json.dumps({"t": 0.0, "sampled": 10}) + "\n"
                                        + json.dumps({"t": 2.0, "sampled": 10, "real_read": 5}) + "\n")
    reporter = ProgressReporter(tmp_path, {"sample_generators": 100}, bars=False, stream=io.StringIO())
    lines = reporter.report()
    assert lines == ["reading photos: 5 photos", "sampling: 20/100 images (20%), 10.0/s, ETA 0m08s"]
    assert reporter.report() == []  # nothing new


def test_reporter_draws_bars_on_a_terminal(tmp_path):
    (tmp_path / "h-1.jsonl").write_text(json.dumps({"t": 0.0, "sampled": 30}) + "\n")
    stream = io.StringIO()
    with ProgressReporter(tmp_path, {"sample_generators": 60}, bars=True, stream=stream):
        pass
    assert "sampling" in stream.getvalue() and "30/60" in stream.getvalue()


def test_summary_rows_from_metrics():
    rows = stage_summary({"sample_generators_ms": 4000, "sampled": 30, "sampled_from_cache": 10,
                          "write_shards_ms": 500, "written": 40})
    assert rows == [
        {"stage": "sample_generators", "seconds": 4.0, "items": 40, "unit": "images", "items_per_second": 10.0},
        {"stage": "write_shards", "seconds": 0.5, "items": 40, "unit": "samples", "items_per_second": 80.0}]
