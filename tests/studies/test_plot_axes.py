"""Log axes that read (studies.reporting.plots._axes): powers of ten on a wide axis, 1-2-5
steps written in full on a short one, never Plotly's bare "2, 5, 0.01, 2, 5"."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from stagetune.studies.reporting.plots._axes import readable_log_axes


def test_an_axis_over_several_decades_is_labelled_at_powers_of_ten() -> None:
    figure = go.Figure(go.Scatter(x=[1e-7, 1e-3, 10], y=[2.5, 1.0, 7.0]))
    figure.update_xaxes(type="log")
    axis = readable_log_axes(figure).layout.xaxis
    assert axis.dtick == 1 and axis.exponentformat == "e" and axis.minor.dtick == "D1"
    assert figure.layout.yaxis.dtick is None  # a linear axis is left alone


def test_a_short_axis_gets_one_two_five_steps_written_in_full() -> None:
    figure = go.Figure(go.Scatter(x=list(range(44)), y=[2.6 * 0.92 ** i for i in range(44)]))
    figure.update_yaxes(type="log")  # an overfit loss: 2.6 down to 0.07
    axis = readable_log_axes(figure).layout.yaxis
    assert list(axis.tickvals) == [0.1, 0.2, 0.5, 1.0, 2.0]
    assert list(axis.ticktext) == ["0.1", "0.2", "0.5", "1", "2"]


def test_each_subplot_axis_follows_its_own_data_and_a_lone_value_is_framed() -> None:
    figure = make_subplots(rows=1, cols=3)
    figure.add_scatter(x=[1e-6, 1e-2], y=[1, 2], row=1, col=1)
    figure.add_scatter(x=[0.0081, 0.24], y=[1, 2], row=1, col=2)
    figure.add_scatter(x=[0.0131], y=[1], row=1, col=3)  # a parameter one trial drew
    figure.update_xaxes(type="log")
    layout = readable_log_axes(figure).layout
    assert layout.xaxis.dtick == 1 and layout.xaxis.minor.dtick is None  # narrow: no minor ticks
    assert list(layout.xaxis2.ticktext) == ["0.01", "0.02", "0.05", "0.1", "0.2"]
    assert list(layout.xaxis3.ticktext) == ["0.005", "0.01", "0.02"]
    low, high = layout.xaxis3.range
    assert round(high - low, 6) == 1.0  # half a decade either side of 0.0131


def test_an_axis_with_its_own_range_keeps_it() -> None:
    figure = go.Figure(go.Contour(x=[0.4, 0.5], y=[2e-4, 2.5e-3], z=[[0, 1], [1, 0]]))
    figure.update_yaxes(type="log", range=[-3.82, -2.54])
    axis = readable_log_axes(figure).layout.yaxis
    assert list(axis.range) == [-3.82, -2.54]
    assert list(axis.ticktext) == ["0.0002", "0.0005", "0.001", "0.002"]
