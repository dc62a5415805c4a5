"""Interval holdings (opened_on, closed_on) become the month-end snapshots everything reads."""

import numpy as np
import pandas as pd
import pytest

from recommender.data.extracts import (
    load_bank,
    validate_holdings,
    validate_interval_holdings,
)
from recommender.data.intervals import (
    DEFAULT_MAX_MONTHS,
    INTERVALS,
    SNAPSHOTS,
    held_months,
    holdings_form,
    month_ends,
)
from recommender.data.partition import split_bank
from recommender.exceptions import DataValidationError

COLUMNS = ["customer_id", "product_id", "opened_on", "closed_on"]


def _held(frame: pd.DataFrame) -> set[tuple[str, str, str]]:
    return {(c, p, str(d.date())) for c, p, d in frame[["customer_id", "product_id",
                                                         "snapshot_date"]].itertuples(index=False)}


def _intervals(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def _validate(rows, tiny_catalog, customers, **kwargs) -> pd.DataFrame:
    return validate_interval_holdings(_intervals(rows), tiny_catalog,
                                      pd.Index(customers["customer_id"]), "h.csv", **kwargs)


def test_known_holdings_at_each_month_end(tiny_catalog, customers):
    """Which product each customer holds at each month-end, worked out by hand."""
    out = _validate([
        ("C001", "current_account", "2026-01-15", None),          # held from January on
        ("C001", "credit_card", "2026-02-01", "2026-03-15"),      # February only
        ("C002", "mortgage", "2026-03-31", None),                 # opened on a month-end
        ("C002", "current_account", "2026-01-10", "2026-02-28"),  # closed on a month-end
        ("C003", "equity_fund", "2026-02-03", "2026-02-20"),      # within one month: never
        ("C004", "current_account", "2026-01-01", "2026-04-02"),  # the latest date: April
    ], tiny_catalog, customers)
    assert _held(out) == {
        ("C001", "current_account", "2026-01-31"), ("C001", "current_account", "2026-02-28"),
        ("C001", "current_account", "2026-03-31"), ("C001", "current_account", "2026-04-30"),
        ("C001", "credit_card", "2026-02-28"),
        ("C002", "mortgage", "2026-03-31"), ("C002", "mortgage", "2026-04-30"),
        ("C002", "current_account", "2026-01-31"),
        ("C004", "current_account", "2026-01-31"), ("C004", "current_account", "2026-02-28"),
        ("C004", "current_account", "2026-03-31"),
    }
    assert len(out) == 11  # one row per holding: nothing repeated
    assert out["snapshot_date"].dtype == "datetime64[ns]"
    assert list(out["product_id"].cat.categories) == list(tiny_catalog.ids.external_ids)
    assert list(out["customer_id"].cat.categories) == list(customers["customer_id"])


@pytest.mark.parametrize(("opened", "closed", "held"), [
    ("2026-01-31", None, ["2026-01-31", "2026-02-28", "2026-03-31"]),  # opened on a month-end
    ("2026-01-10", "2026-02-28", ["2026-01-31"]),                      # closed on a month-end
    ("2026-01-10", "2026-03-01", ["2026-01-31", "2026-02-28"]),        # closed the day after
    ("2026-02-02", "2026-02-27", []),                                  # within one month
    ("2026-02-28", "2026-02-28", []),                                  # opened, closed same day
    ("2026-02-01", "2026-02-01", []),
])
def test_edges_of_a_month(tiny_catalog, customers, opened, closed, held):
    """Held at M when opened_on <= M < closed_on, as calendar days."""
    out = _validate([("C001", "current_account", opened, closed),
                     ("C002", "current_account", "2026-01-01", "2026-03-31")],
                    tiny_catalog, customers)
    assert sorted(d for c, _, d in _held(out) if c == "C001") == held


def test_times_of_day_are_dropped(tiny_catalog, customers):
    """Opened at 18:30 on a month-end is opened on that month-end."""
    out = _validate([("C001", "current_account", "2026-01-31 18:30", "2026-03-31 09:00")],
                    tiny_catalog, customers)
    assert sorted(d for _, _, d in _held(out)) == ["2026-01-31", "2026-02-28"]


def test_overlapping_intervals_count_once(tiny_catalog, customers):
    """Two time deposits open at once are one holding, as repeated snapshot rows are."""
    out = _validate([("C001", "current_account", "2026-01-05", "2026-03-10"),
                     ("C001", "current_account", "2026-02-05", None),
                     ("C001", "current_account", "2026-02-05", None)], tiny_catalog, customers,
                    as_of="2026-04-30")
    assert [str(d.date()) for d in out["snapshot_date"]] == [
        "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]


def test_month_ends_are_at_most_max_months_back(tiny_catalog, customers):
    rows = [("C001", "current_account", "2019-06-15", None),
            ("C002", "mortgage", "2026-01-02", "2026-05-09")]
    out = _validate(rows, tiny_catalog, customers, max_months=3)
    assert sorted({str(d.date()) for d in out["snapshot_date"]}) == [
        "2026-03-31", "2026-04-30", "2026-05-31"]
    default = _validate(rows, tiny_catalog, customers)
    assert DEFAULT_MAX_MONTHS == 24
    assert default["snapshot_date"].nunique() == 24
    assert default["snapshot_date"].min() == pd.Timestamp("2024-06-30")
    with pytest.raises(ValueError, match="max_months"):
        _validate(rows, tiny_catalog, customers, max_months=0)


def test_as_of_sets_the_last_month_end(tiny_catalog, customers):
    """Before the latest date: later openings are not held yet; after it: still held."""
    rows = [("C001", "current_account", "2026-01-15", None),
            ("C002", "mortgage", "2026-03-03", None)]
    early = _validate(rows, tiny_catalog, customers, as_of="2026-02-10")
    assert _held(early) == {("C001", "current_account", "2026-01-31"),
                            ("C001", "current_account", "2026-02-28")}
    late = _validate(rows, tiny_catalog, customers, as_of=pd.Timestamp("2026-05-31"))
    assert sorted({str(d.date()) for d in late["snapshot_date"]})[-1] == "2026-05-31"
    assert ("C002", "mortgage", "2026-05-31") in _held(late)


def test_no_intervals_no_snapshots(tiny_catalog, customers):
    out = _validate([], tiny_catalog, customers)
    assert len(out) == 0 and list(out.columns) == ["customer_id", "product_id", "snapshot_date"]


def test_held_months_matches_a_plain_loop():
    """The vectorised expansion against the rule written out one interval at a time."""
    rng = np.random.default_rng(7)
    days = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 500, 400), unit="D")
    length = pd.to_timedelta(rng.integers(0, 200, 400), unit="D")
    opened = pd.Series(days)
    closed = pd.Series(days + length).where(rng.random(400) < 0.6)
    ends = month_ends(opened, closed, max_months=12)
    rows, months = held_months(opened, closed, ends)
    expected = [(i, j) for i in range(400) for j, end in enumerate(ends)
                if opened[i] <= end and (pd.isna(closed[i]) or closed[i] > end)]
    assert sorted(zip(rows.tolist(), months.tolist(), strict=True)) == expected
    assert len(ends) == 12


@pytest.mark.parametrize(("columns", "form"), [
    (["customer_id", "product_id", "snapshot_date"], SNAPSHOTS),
    (["customer_id", "product_id", "opened_on", "closed_on"], INTERVALS),
    (["customer_id", "product_id", "opened_on"], INTERVALS),
])
def test_the_form_is_told_by_the_columns(columns, form):
    assert holdings_form(columns, "h.csv") == form


@pytest.mark.parametrize(("columns", "message"), [
    (["customer_id", "product_id", "snapshot_date", "opened_on"], "has both 'snapshot_date'"),
    (["customer_id", "product_id", "snapshot_date", "closed_on"], "has both 'snapshot_date'"),
    (["customer_id", "product_id"], "missing required columns ['snapshot_date']"),
    (["customer_id", "product_id", "closed_on"], "or ['opened_on'] for intervals"),
])
def test_both_forms_or_neither_is_refused(columns, message, raw_customers, write_extracts,
                                          tiny_catalog, tmp_path):
    values = ["C001", "current_account", "2026-01-31", "2026-01-31"]
    holdings = pd.DataFrame([values[:len(columns)]], columns=columns)
    folder = write_extracts(tmp_path / "d", raw_customers, holdings)
    with pytest.raises(DataValidationError) as info:
        load_bank(folder, tiny_catalog)
    assert info.value.source == str(folder / "holdings.csv")
    assert message in str(info.value)
    assert "opened_on" in str(info.value) and "snapshot_date" in str(info.value)


def _good_intervals() -> pd.DataFrame:
    return _intervals([
        ("C001", "current_account", "2026-01-15", ""),
        ("C002", "mortgage", "2026-02-03", "2026-04-09"),
        ("C003", "equity_fund", "2026-01-20", ""),
        ("C004", "credit_card", "2026-03-01", "2026-03-05"),
        ("C005", "current_account", "2026-02-14", ""),
        ("C006", "credit_card", "2026-01-02", "2026-02-02"),
        ("C006", "equity_fund", "2026-03-30", ""),
    ])


@pytest.mark.parametrize(("column", "row", "value", "message"), [
    ("opened_on", 2, "2026-13-45", "is not a date"),
    ("closed_on", 5, "next spring", "is not a date"),
    ("opened_on", 4, "", "is missing"),
    ("closed_on", 1, "2026-01-31", "is before opened_on"),
    ("opened_on", 3, "9999-12-31", "is outside 1850-01-01 .. 2200-12-31"),
    ("closed_on", 6, "1066-10-14", "is outside 1850-01-01 .. 2200-12-31"),
    ("product_id", 4, "gold_bar", "is not a product of the catalog <tiny catalog>"),
    ("customer_id", 0, "C999", "names a customer that is not in the customers extract"),
])
def test_bad_intervals_name_file_column_and_rows(raw_customers, write_extracts, tiny_catalog,
                                                 tmp_path, column, row, value, message):
    holdings = _good_intervals()
    load_bank(write_extracts(tmp_path / "good", raw_customers, holdings), tiny_catalog)
    holdings.loc[row, column] = value
    folder = write_extracts(tmp_path / "bad", raw_customers, holdings)
    with pytest.raises(DataValidationError) as info:
        load_bank(folder, tiny_catalog)
    assert info.value.source == str(folder / "holdings.csv")
    assert (info.value.column, info.value.rows) == (column, (row,))
    assert message in str(info.value)


def test_missing_opened_on_is_named(tiny_catalog, customers):
    with pytest.raises(DataValidationError, match=r"missing required columns \['product_id'\]"):
        validate_interval_holdings(_good_intervals().drop(columns=["product_id"]), tiny_catalog,
                                   pd.Index(customers["customer_id"]), "h.csv")


def test_csv_and_parquet_intervals_load_alike(raw_customers, write_extracts, tiny_catalog,
                                              tmp_path):
    """Parquet dates are dates (empty closed_on a null); CSV dates are text."""
    text = _good_intervals()
    typed = text.assign(opened_on=pd.to_datetime(text["opened_on"]).dt.date,
                        closed_on=pd.to_datetime(text["closed_on"].replace("", None)).dt.date)
    from_csv = load_bank(write_extracts(tmp_path / "c", raw_customers, text), tiny_catalog)
    from_parquet = load_bank(write_extracts(tmp_path / "p", raw_customers, typed, ".parquet"),
                             tiny_catalog)
    pd.testing.assert_frame_equal(from_csv.holdings, from_parquet.holdings)
    assert len(from_csv.holdings) == 4 + 2 + 4 + 0 + 3 + 1 + 2  # C001 .. C006, by hand
    assert [str(d.date()) for d in from_csv.snapshots] == [
        "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]


def _as_intervals(raw_holdings: pd.DataFrame) -> pd.DataFrame:
    """The conftest snapshot holdings (Aug-Oct 2026) as intervals, with the edges in them."""
    return _intervals([
        ("C001", "current_account", "2024-03-02", ""),  # older than the snapshots: cut off
        ("C001", "credit_card", "2026-08-01", "2026-08-31"),  # closed on the month-end: never
        ("C002", "current_account", "2026-08-31", ""),  # opened on the month-end: held
        ("C002", "mortgage", "2026-09-01", ""),
        ("C002", "home_insurance", "2026-10-31", ""),   # the latest date
        ("C003", "current_account", "2026-01-01", ""),
        ("C003", "equity_fund", "2026-05-05", "2026-10-15"),
        ("C003", "equity_fund", "2026-09-10", ""),     # overlaps the one before
        ("C004", "current_account", "2026-08-31", ""),
        ("C004", "credit_card", "2026-08-31", ""),
        ("C004", "mortgage", "2026-08-31", ""),
        ("C004", "home_insurance", "2026-08-31", ""),
        ("C005", "current_account", "2026-09-30", ""),
        ("C005", "credit_card", "2026-10-02", "2026-10-03"),  # within October: never
        ("C005", "credit_card", "2026-10-03", ""),
        ("C006", "current_account", "2026-08-31", ""),
        ("C006", "credit_card", "2026-08-31", ""),
        ("C006", "equity_fund", "2026-10-30", ""),
    ])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_load_bank_on_intervals_equals_the_snapshot_extract(raw_customers, raw_holdings,
                                                            write_extracts, tiny_catalog,
                                                            tmp_path, suffix):
    snapshots = load_bank(write_extracts(tmp_path / "s", raw_customers, raw_holdings, suffix),
                          tiny_catalog)
    intervals = load_bank(write_extracts(tmp_path / "i", raw_customers,
                                         _as_intervals(raw_holdings), suffix),
                          tiny_catalog, max_months=3)
    pd.testing.assert_frame_equal(intervals.customers, snapshots.customers)
    ordered = snapshots.holdings.sort_values(["snapshot_date", "customer_id", "product_id"])
    pd.testing.assert_frame_equal(intervals.holdings, ordered.reset_index(drop=True))
    assert intervals.snapshots == snapshots.snapshots
    assert intervals.reference_date == snapshots.reference_date == pd.Timestamp("2026-10-31")
    recent = load_bank(tmp_path / "i", tiny_catalog, last_snapshots=2)
    assert recent.snapshots == snapshots.snapshots[-2:]
    assert len(recent.holdings) == (snapshots.holdings["snapshot_date"]
                                    >= snapshots.snapshots[-2]).sum()


def test_as_of_drops_later_snapshots_of_a_snapshot_extract(raw_customers, raw_holdings,
                                                           write_extracts, tiny_catalog,
                                                           tmp_path):
    """as_of means the same for both forms: holdings up to its month-end."""
    snapshots = write_extracts(tmp_path / "s", raw_customers, raw_holdings)
    intervals = write_extracts(tmp_path / "i", raw_customers, _as_intervals(raw_holdings))
    a = load_bank(snapshots, tiny_catalog, as_of="2026-09-15")
    b = load_bank(intervals, tiny_catalog, as_of="2026-09-15", max_months=2)
    assert [str(d.date()) for d in a.snapshots] == ["2026-08-31", "2026-09-30"]
    pd.testing.assert_frame_equal(
        b.holdings, a.holdings.sort_values(["snapshot_date", "customer_id", "product_id"])
        .reset_index(drop=True))


@pytest.mark.parametrize(("suffix", "in_child"), [(".csv", False), (".parquet", False),
                                                  (".parquet", True)])
def test_a_bank_of_intervals_splits_into_parts(raw_customers, raw_holdings, write_extracts,
                                               tiny_catalog, tmp_path, suffix, in_child):
    """Parts of an interval extract hold the snapshot rows load_bank makes of it."""
    folder = write_extracts(tmp_path / "i", raw_customers, _as_intervals(raw_holdings), suffix)
    whole = load_bank(folder, tiny_catalog, last_snapshots=2)
    with split_bank(folder, last_snapshots=2, part_size=2, in_child=in_child,
                    max_months=3) as bank:
        assert bank.parts == 3
        parts = [bank.read(i, tiny_catalog) for i in range(bank.parts)]
    assert all(p.snapshots == whole.snapshots for p in parts)
    held = set().union(*(_held(p.holdings.astype({"customer_id": str, "product_id": str}))
                         for p in parts))
    assert held == _held(whole.holdings.astype({"customer_id": str, "product_id": str}))
    assert sum(len(p.holdings) for p in parts) == len(whole.holdings)  # overlaps count once
    for p in parts:
        assert set(p.holdings["customer_id"].astype(str)) <= set(p.customers["customer_id"])


def test_bad_interval_dates_are_refused_before_a_split(raw_customers, write_extracts,
                                                       tmp_path):
    holdings = _good_intervals()
    holdings.loc[4, "closed_on"] = "2026-01-01"
    folder = write_extracts(tmp_path / "bad", raw_customers, holdings)
    with pytest.raises(DataValidationError, match="is before opened_on") as info:
        split_bank(folder, last_snapshots=2)
    assert (info.value.source, info.value.column, info.value.rows) == (
        str(folder / "holdings.csv"), "closed_on", (4,))


def test_validate_holdings_still_wants_snapshots(tiny_catalog, customers):
    with pytest.raises(DataValidationError, match="snapshot_date"):
        validate_holdings(_good_intervals(), tiny_catalog, pd.Index(customers["customer_id"]))
