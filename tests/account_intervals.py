"""Holdings as a core banking system keeps them: monthly snapshots turned into the account
intervals (opened, closed) that give them, for tests of banks that bring intervals."""

from __future__ import annotations

import pandas as pd


def intervals_of(snapshots: pd.DataFrame) -> pd.DataFrame:
    """Monthly snapshots as the accounts that give them: one row per run of consecutive
    month-ends a customer held a product; opened on the first month-end of the run, closed
    on the month-end after its last (a product closed on a month-end is not held at it)."""
    frame = snapshots.assign(snapshot_date=pd.to_datetime(snapshots["snapshot_date"]))
    frame = frame.sort_values(["customer_id", "product_id", "snapshot_date"])
    month = frame["snapshot_date"].dt.year * 12 + frame["snapshot_date"].dt.month
    same = (frame["customer_id"] == frame["customer_id"].shift()) & (
        frame["product_id"] == frame["product_id"].shift())
    run = (~same | (month - month.shift() != 1)).cumsum()
    last = frame["snapshot_date"].max()
    grouped = frame.groupby(run)
    out = pd.DataFrame({"customer_id": grouped["customer_id"].first(),
                        "product_id": grouped["product_id"].first(),
                        "opened_on": grouped["snapshot_date"].min(),
                        "end": grouped["snapshot_date"].max()})
    closed = (out["end"] + pd.offsets.MonthEnd(1)).where(out["end"] < last)
    out["opened_on"] = out["opened_on"].dt.strftime("%Y-%m-%d")
    out["closed_on"] = closed.dt.strftime("%Y-%m-%d").fillna("")
    return out.drop(columns="end").reset_index(drop=True)
