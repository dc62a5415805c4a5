"""The campaign's progress bar: on the stream it is given, silent without one, no thread."""

from __future__ import annotations

import io
import threading

from tqdm._monitor import TMonitor

from recommender.campaign.progress import with_progress


def _chunks() -> list[list[int]]:
    return [list(range(400)), list(range(400)), list(range(200))]


def _monitors() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if isinstance(t, TMonitor)}


def test_the_bar_counts_customers_on_its_stream_and_starts_no_thread():
    stream = io.StringIO()
    seen = []
    before = _monitors()  # implicit's own (disabled) bars may have started one
    for chunk in with_progress(_chunks(), 1000, stream):
        seen.append(chunk)
        assert _monitors() <= before
    assert seen == _chunks()
    last = stream.getvalue().rstrip("\n").split("\r")[-1]
    assert "100%" in last and "1.00k/1.00k" in last and "customers" in last
    assert stream.getvalue().endswith("\n")


def test_no_stream_means_no_output(capsys):
    assert list(with_progress(_chunks(), 1000, None)) == _chunks()
    assert capsys.readouterr() == ("", "")


def test_the_bar_is_closed_when_the_loop_stops_early():
    stream = io.StringIO()
    for _ in with_progress(_chunks(), 1000, stream):
        break
    assert stream.getvalue().endswith("\n")
