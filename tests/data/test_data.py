"""Extracts: CSV and Parquet load alike; every bad input names the file, column and rows."""

import os

import numpy as np
import pandas as pd
import pytest

from recommender.data.customers import validate_customers
from recommender.data.extracts import (
    BankData,
    find_extract,
    load_bank,
    read_table,
    validate_holdings,
    write_bank,
)
from recommender.exceptions import DataValidationError


def test_csv_extracts_load_and_validate(csv_bank_dir, tiny_catalog):
    """Dtypes are canonical and yes/no, case and whitespace variants are normalised."""
    bank = load_bank(csv_bank_dir, tiny_catalog)
    customers = bank.customers
    assert customers["customer_id"].tolist() == ["C001", "C002", "C003", "C004", "C005", "C006"]
    assert customers["age"].dtype == np.int32 and customers["age"].tolist() == [20, 30, 70, 35,
                                                                                 27, 40]
    assert customers["income"].dtype == np.float64
    assert customers["consent_profiling"].tolist() == [True, True, True, True, False, True]
    assert customers["residency"].iloc[4] == "non_resident"
    assert len(bank.holdings) == 37
    assert [str(s.date()) for s in bank.snapshots] == ["2026-08-31", "2026-09-30", "2026-10-31"]
    assert list(bank.holdings["product_id"].cat.categories) == list(
        tiny_catalog.ids.external_ids)


def test_csv_and_parquet_give_the_same_validated_frames(csv_bank_dir, parquet_bank_dir,
                                                        tiny_catalog):
    """The format of an extract makes no difference to what the model sees."""
    from_csv = load_bank(csv_bank_dir, tiny_catalog)
    from_parquet = load_bank(parquet_bank_dir, tiny_catalog)
    pd.testing.assert_frame_equal(from_csv.customers, from_parquet.customers)
    pd.testing.assert_frame_equal(from_csv.holdings, from_parquet.holdings)


def test_text_values_are_normalised(raw_customers):
    raw = raw_customers.astype(str)
    raw.loc[0, "marital_status"] = " Single "
    raw.loc[1, "consent_profiling"] = "YES"
    raw.loc[2, "consent_profiling"] = "0"
    raw.loc[3, "residency"] = "RESIDENT"
    raw.loc[4, "customer_id"] = " C005 "
    out = validate_customers(raw, "x.csv")
    assert out.loc[0, "marital_status"] == "single"
    assert out["consent_profiling"].tolist()[1:3] == [True, False]
    assert out.loc[3, "residency"] == "resident"
    assert out.loc[4, "customer_id"] == "C005"


def test_unknown_income_is_allowed_other_numbers_are_not(raw_customers):
    """Income may be missing (eligibility treats it as unknown); age may not."""
    raw = raw_customers.copy()
    raw["income"] = raw["income"].astype(object)
    raw.loc[1, "income"] = None
    assert np.isnan(validate_customers(raw)["income"].iloc[1])
    raw["age"] = raw["age"].astype(object)
    raw.loc[3, "age"] = None
    with pytest.raises(DataValidationError, match="is missing") as info:
        validate_customers(raw, "c.csv")
    assert (info.value.column, info.value.rows) == ("age", (3,))


def test_repeated_holding_rows_count_once(tiny_catalog, csv_bank_dir, raw_customers,
                                          raw_holdings, write_extracts, tmp_path):
    """Two time deposits in the same month are one holding."""
    doubled = pd.concat([raw_holdings, raw_holdings.iloc[:3]], ignore_index=True)
    folder = write_extracts(tmp_path / "d", raw_customers, doubled)
    assert len(load_bank(folder, tiny_catalog).holdings) == len(raw_holdings)


def test_birth_date_instead_of_age(raw_customers):
    """Without an age column, age is computed from birth_date at the reference date."""
    raw = raw_customers.drop(columns="age").assign(
        birth_date=["2000-06-15", "1990-01-01", "1950-12-31", "1985-03-03", "1999-01-01",
                    "1980-07-01"])
    out = validate_customers(raw, "c.csv", as_of=pd.Timestamp("2026-10-31"))
    assert out["age"].tolist() == [26, 36, 75, 41, 27, 46]


def test_age_on_the_birthday_itself(raw_customers):
    """A customer turns 18 on their 18th birthday."""
    raw = raw_customers.drop(columns="age").assign(
        birth_date=["2008-10-31", "2000-10-31", "1950-01-01", "1985-01-01", "1999-01-01",
                    "1980-01-01"])
    out = validate_customers(raw, "c.csv", as_of=pd.Timestamp("2026-10-31"))
    assert out["age"].tolist()[:2] == [18, 26]


def _customers_error(folder, catalog) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        load_bank(folder, catalog)
    return info.value


@pytest.mark.parametrize(("column", "bad", "rows", "message"), [
    ("age", {2: "abc", 4: "x1"}, (2, 4), "2 value(s) in column 'age' is not a number"),
    ("age", {1: "-3"}, (1,), "is outside the possible range"),
    ("age", {5: "31.5"}, (5,), "is not a whole number"),
    ("risk_grade", {3: "C9"}, (3,), "is not one of ['C1', 'C2', 'C3', 'C4', 'C5']"),
    ("customer_id", {3: "C001", 5: "C002"}, (3, 5), "is a duplicate customer id"),
    ("customer_id", {0: ""}, (0,), "is empty"),
    ("marital_status", {1: "complicated"}, (1,), "is not one of"),
    ("residency", {0: "mars"}, (0,), "is not one of"),
    ("consent_profiling", {2: "maybe"}, (2,), "is not a yes/no value"),
    ("dependants", {0: "31"}, (0,), "is outside the possible range"),
    ("income", {4: "lots"}, (4,), "is not a number"),
])
def test_bad_customer_values_name_file_column_and_rows(raw_customers, raw_holdings, tmp_path,
                                                       write_extracts, tiny_catalog, column,
                                                       bad, rows, message):
    """Each bad value is reported with the file, the column and the first offending rows."""
    raw = raw_customers.astype(str)
    for row, value in bad.items():
        raw.loc[row, column] = value
    folder = write_extracts(tmp_path / "bad", raw, raw_holdings)
    error = _customers_error(folder, tiny_catalog)
    assert error.source == str(folder / "customers.csv")
    assert error.column == column
    assert error.rows == rows
    assert message in str(error)
    assert f"file {folder / 'customers.csv'}" in str(error)
    assert f"first offending rows {list(rows)}" in str(error)


def test_only_the_first_five_offending_rows_are_listed(raw_customers):
    raw = pd.concat([raw_customers] * 2, ignore_index=True).astype(str)
    raw["customer_id"] = [f"C{i:03d}" for i in range(len(raw))]
    raw["age"] = "old"
    with pytest.raises(DataValidationError) as info:
        validate_customers(raw, "c.csv")
    assert info.value.rows == (0, 1, 2, 3, 4)
    assert "12 value(s)" in str(info.value)


def test_missing_customer_id_column(raw_customers, raw_holdings, tmp_path, write_extracts,
                                    tiny_catalog):
    folder = write_extracts(tmp_path / "bad", raw_customers.drop(columns=["customer_id"]),
                            raw_holdings)
    error = _customers_error(folder, tiny_catalog)
    assert error.source == str(folder / "customers.csv")
    assert "missing required columns ['customer_id']" in str(error)


def test_an_absent_income_column_is_unknown_income_with_one_warning(raw_customers, caplog):
    customers = validate_customers(raw_customers.drop(columns=["income"]), "c.csv")
    assert customers["income"].isna().all()
    assert caplog.text.count("c.csv: no income column") == 1


@pytest.mark.parametrize(("column", "row", "value", "message"), [
    ("product_id", 4, "gold_bar", "is not a product of the catalog <tiny catalog>"),
    ("customer_id", 7, "C999", "names a customer that is not in the customers extract"),
    ("snapshot_date", 2, "2026-13-45", "is not a date"),
    ("snapshot_date", 6, "last month", "is not a date"),
])
def test_bad_holdings_name_file_column_and_rows(raw_customers, raw_holdings, tmp_path,
                                                write_extracts, tiny_catalog, column, row,
                                                value, message):
    holdings = raw_holdings.copy()
    holdings.loc[row, column] = value
    folder = write_extracts(tmp_path / "bad", raw_customers, holdings)
    error = _customers_error(folder, tiny_catalog)
    assert error.source == str(folder / "holdings.csv")
    assert (error.column, error.rows) == (column, (row,))
    assert message in str(error)


def test_missing_holdings_column_is_named(raw_customers, raw_holdings, customers,
                                          tiny_catalog):
    with pytest.raises(DataValidationError,
                       match=r"missing required columns \['product_id'\]") as info:
        validate_holdings(raw_holdings.drop(columns=["product_id"]), tiny_catalog,
                          pd.Index(customers["customer_id"]), "h.csv")
    assert info.value.source == "h.csv"


def test_missing_snapshot_date_column_through_load_bank(raw_customers, raw_holdings, tmp_path,
                                                        write_extracts, tiny_catalog):
    folder = write_extracts(tmp_path / "bad", raw_customers,
                            raw_holdings.drop(columns=["snapshot_date"]))
    error = _customers_error(folder, tiny_catalog)
    assert error.source == str(folder / "holdings.csv")
    assert "missing required columns ['snapshot_date']" in str(error)


def test_missing_extract_file(csv_bank_dir, tiny_catalog):
    """A folder without a holdings file names the folder and the files it looked for."""
    (csv_bank_dir / "holdings.csv").unlink()
    error = _customers_error(csv_bank_dir, tiny_catalog)
    assert error.source == str(csv_bank_dir)
    assert "no holdings.parquet or holdings.csv" in str(error)
    with pytest.raises(DataValidationError, match="file not found") as info:
        read_table(csv_bank_dir / "holdings.csv")
    assert info.value.source == str(csv_bank_dir / "holdings.csv")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "customers.xlsx"
    path.write_bytes(b"not a spreadsheet")
    with pytest.raises(DataValidationError, match="unsupported file type '.xlsx'") as info:
        read_table(path)
    assert info.value.source == str(path)


def test_unreadable_parquet_is_a_validation_error(tmp_path):
    path = tmp_path / "customers.parquet"
    path.write_bytes(b"PAR1 garbage")
    with pytest.raises(DataValidationError, match="cannot read the file") as info:
        read_table(path)
    assert info.value.source == str(path)


def test_parquet_is_preferred_over_csv(csv_bank_dir, raw_customers):
    raw_customers.to_parquet(csv_bank_dir / "customers.parquet", index=False)
    assert find_extract(csv_bank_dir, "customers") == csv_bank_dir / "customers.parquet"
    assert find_extract(csv_bank_dir, "holdings") == csv_bank_dir / "holdings.csv"


def test_write_bank_round_trips_and_leaves_no_partial_files(tiny_bank, tiny_catalog, tmp_path):
    """write_bank -> load_bank gives the same frames; only the two final files remain."""
    out = tmp_path / "out"
    write_bank(tiny_bank, out)
    assert sorted(os.listdir(out)) == ["customers.parquet", "holdings.parquet"]
    again = load_bank(out, tiny_catalog)
    pd.testing.assert_frame_equal(again.customers, tiny_bank.customers)
    pd.testing.assert_frame_equal(again.holdings, tiny_bank.holdings)
    write_bank(tiny_bank, out)  # overwriting an existing folder works too
    assert sorted(os.listdir(out)) == ["customers.parquet", "holdings.parquet"]


def _failing_to_parquet(self, path, *args, **kwargs):
    """Stands in for a disk that fills up half way through a write."""
    with open(path, "wb") as handle:
        handle.write(b"PAR1 half a file")
    raise OSError("No space left on device")


def test_failed_write_never_replaces_a_good_file(tiny_bank, tmp_path, monkeypatch,
                                                 tiny_catalog):
    """A write that fails half way leaves the previous extracts loadable and unchanged."""
    out = tmp_path / "out"
    write_bank(tiny_bank, out)
    before = (out / "customers.parquet").read_bytes()
    monkeypatch.setattr(pd.DataFrame, "to_parquet", _failing_to_parquet)
    with pytest.raises(OSError):
        write_bank(tiny_bank, out)
    assert (out / "customers.parquet").read_bytes() == before
    assert not (tmp_path / "new").exists()
    with pytest.raises(OSError):
        write_bank(tiny_bank, tmp_path / "new")
    assert not (tmp_path / "new" / "customers.parquet").exists()


def test_failed_write_leaves_no_partial_file(tiny_bank, tmp_path, monkeypatch):
    monkeypatch.setattr(pd.DataFrame, "to_parquet", _failing_to_parquet)
    with pytest.raises(OSError):
        write_bank(tiny_bank, tmp_path / "new")
    assert os.listdir(tmp_path / "new") == []


def test_snapshots_are_sorted_and_distinct(tiny_bank):
    shuffled = BankData(tiny_bank.customers, tiny_bank.holdings.iloc[::-1])
    assert shuffled.snapshots == tiny_bank.snapshots
    assert len(tiny_bank.snapshots) == 3


def test_load_bank_can_keep_only_the_latest_snapshots(tmp_path, packaged_catalog, life_stages):
    """Serving and campaigns read a few months, not the whole history."""
    from recommender.data.demo import generate

    demo = generate(300, 5, 2, packaged_catalog, life_stages)
    write_bank(BankData(demo.customers, demo.holdings), tmp_path)
    full = load_bank(tmp_path, packaged_catalog)
    recent = load_bank(tmp_path, packaged_catalog, last_snapshots=2)
    assert recent.snapshots == full.snapshots[-2:]
    expected = full.holdings[full.holdings["snapshot_date"] >= full.snapshots[-2]]
    assert len(recent.holdings) == len(expected)
    assert recent.reference_date == full.reference_date
