"""The live view of a run (include/deploy/run_view.py): a line per step, fed with task instances.

The task instances below are what a mobiledet_convert run of one checkpoint and two precisions
puts in the metadata DB, in the order Airflow creates and runs them (mapped tasks with their
placeholder, the model group's check created after its convert, the job's name rendered once
the task ran).
"""
from __future__ import annotations

import datetime as dt
import io

from include.deploy.run_view import RunView, group_lines

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def ti(task_id, state=None, index=-1, start=None, end=None, rendered=None):
    at = (lambda s: None if s is None else T0 + dt.timedelta(seconds=s))
    return {"task_id": task_id, "map_index": index, "state": state, "start_date": at(start),
            "end_date": at(end), "rendered_map_index": rendered}


def snapshots() -> list[list[dict]]:
    """Five polls of one run."""
    waiting = [ti("plan"), ti("export"), ti("jobs"), ti("model.convert"), ti("model.check"),
               ti("gate"), ti("search_jobs"), ti("search"), ti("publish"), ti("report")]
    planned = [ti("plan", "success", start=0, end=5), ti("export", "running", 0, start=5),
               *waiting[2:]]
    mapped = [ti("plan", "success", start=0, end=5), ti("export", "success", 0, 5, 15),
              ti("jobs", "success", start=15, end=16),
              ti("model.convert", "success", 0, 16, 17, "edgetpu/int8"),
              ti("model.convert", "running", 1, 17, rendered="1"),
              ti("model.check", "running", 0, 17), *waiting[5:]]
    checked = [*mapped[:3], ti("model.convert", "success", 0, 16, 17, "edgetpu/int8"),
               ti("model.convert", "success", 1, 17, 18, "edgetpu/float32"),
               ti("model.check", "success", 0, 17, 22, "edgetpu/int8"),
               ti("model.check", "failed", 1, 18, 20, "edgetpu/float32"),
               ti("gate", "running", start=22), *waiting[6:]]
    done = [*checked[:7], ti("gate", "success", start=22, end=23),
            ti("search_jobs", "success", start=23, end=24), ti("search", "skipped"),
            ti("publish", "success", start=24, end=25), ti("report", "success", start=25, end=26)]
    return [waiting, planned, mapped, checked, done]


def test_lines_follow_the_pipeline_one_per_model():
    lines = group_lines(snapshots()[2])
    assert [line.label for line in lines] == ["plan", "export", "edgetpu/int8", "model 1",
                                              "gate", "search", "publish", "report"]
    states = {line.label: line.state for line in lines}
    assert states["plan"] == "success" and states["export"] == "success"   # jobs folded in
    assert states["edgetpu/int8"] == "running"       # converted, its check runs
    assert states["gate"] == "waiting"
    final = {line.label: (line.state, line.detail()) for line in group_lines(snapshots()[4])}
    assert final["edgetpu/int8"] == ("success", "convert done 1.0s, check done 5.0s")
    assert final["edgetpu/float32"] == ("failed", "convert done 1.0s, check FAILED 2.0s")
    assert final["search"] == ("success", "no search needed")


def test_a_model_whose_check_is_not_created_yet_is_not_done():
    only_convert = [ti("model.convert", "success", 0, 0, 1, "edgetpu/int8"),
                    ti("model.check", None, -1)]
    [line] = group_lines(only_convert + [ti("model.convert", "running", 1, 1)])[:1]
    assert line.state == "running" and "check waiting" in line.detail()


def test_plain_output_prints_each_change_once():
    out = io.StringIO()
    with RunView(out, plain=True) as view:
        for snapshot in snapshots():
            view.update(snapshot)
            view.update(snapshot)          # the same poll twice prints nothing new
    lines = [line.split("s  ", 1)[1].split() for line in out.getvalue().splitlines()]
    assert [(words[0], words[1]) for words in lines] == [
        ("plan", "done"), ("export", "running"), ("export", "done"),
        ("edgetpu/int8", "done"), ("edgetpu/float32", "FAILED"), ("gate", "running"),
        ("gate", "done"), ("search", "done"), ("publish", "done"), ("report", "done")]
    text = out.getvalue()
    assert "edgetpu/int8           done in 6.0s  (convert done 1.0s, check done 5.0s)" in text
    assert "model 1" not in text       # a model's line waits for its name


def test_terminal_view_draws_every_step():
    view = RunView(io.StringIO(), plain=False)
    view.update(snapshots()[3])
    screen = io.StringIO()
    from rich.console import Console

    Console(file=screen, width=120, color_system=None).print(view.render())
    text = screen.getvalue()
    for label in ("plan", "export", "edgetpu/int8", "edgetpu/float32", "gate", "publish"):
        assert label in text
    assert "✓ plan" in text and "✗ edgetpu/float32" in text and "FAILED" in text
    assert "· publish" in text and "waiting" in text
