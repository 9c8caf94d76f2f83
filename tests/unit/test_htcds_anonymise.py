"""The HTCDS export's generalisation and suppression, on rows made here (no store).

The k-anonymity of the result is counted here, never taken from the function's own report.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.export.htcds import anonymise

QUASI = ("ageBroad", "prs_Gender", "prs_Citizenship", "vic_LocationOfExploitation",
         "yearOfRegistration")  # fmt: skip
OTHER = {
    "vic_TraffickingStatus": "PossibleVictimOfTrafficking",
    "vic_TypeOfExploitation": "ForcedLabour",
    "vic_Methods_of_Control": "DebtBondage",
    "vic_ForcedLabourIndustry": "B_MiningAndQuarrying",
    "cas_Status": "Active",
    "cas_ReasonForCaseClosure": "",
}


def person(age: str, gender: str, citizenship: str, country: str, year: str) -> dict[str, str]:
    return {
        "ageBroad": age,
        "prs_Gender": gender,
        "prs_Citizenship": citizenship,
        "vic_LocationOfExploitation": country,
        "yearOfRegistration": year,
        **OTHER,
    }


def smallest_group(rows: list[dict[str, str]]) -> int:
    counts = Counter(tuple(r[q] for q in QUASI) for r in rows)
    return min(counts.values(), default=0)


def test_rows_already_k_anonymous_are_kept_as_they_are() -> None:
    rows = [person("18-24", "Masculine", "CD", "CD", "2026")] * 11 + [
        person("15-17", "Feminine", "RW", "CD", "2025")
    ] * 12
    result = anonymise(rows, 11)
    assert result.suppressed == 0 and result.applied == ()
    assert sorted(map(str, result.rows)) == sorted(map(str, rows))


def test_a_rare_row_within_the_budget_is_suppressed_without_generalising() -> None:
    rows = [person("18-24", "Masculine", "CD", "CD", "2026")] * 40
    rows.append(person("50+", "NonConforming", "PE", "CD", "2026"))
    result = anonymise(rows, 11)
    assert result.applied == ()
    assert result.suppressed == 1
    assert all(r["prs_Citizenship"] == "CD" for r in result.rows)


def test_generalisation_steps_are_taken_in_order_until_enough_rows_group() -> None:
    # eleven adults in bands of their own: only the broad age band groups them
    bands = ["18-24", "25-34", "35-49", "50+"]
    rows = [person(bands[i % 4], "Feminine", "CD", "CD", "2026") for i in range(12)]
    result = anonymise(rows, 11)
    assert result.applied == ("age band to minor / adult / unknown",)
    assert result.suppressed == 0
    assert {r["ageBroad"] for r in result.rows} == {"Adult"}
    # citizenships of one region group once citizenship is generalised too
    rows = [
        person(["25-34", "18-24"][i % 2], "Masculine", ["CD", "RW", "BI"][i % 3], "CD", "2025")
        for i in range(12)
    ]
    result = anonymise(rows, 11)
    assert result.applied == (
        "age band to minor / adult / unknown",
        "citizenship to UN region",
    )
    assert result.suppressed == 0
    assert {r["prs_Citizenship"] for r in result.rows} == {"Africa"}
    assert {r["yearOfRegistration"] for r in result.rows} == {"2025"}


rows_strategy = st.lists(
    st.builds(
        person,
        st.sampled_from(["0-11", "15-17", "18-24", "35-49", "Unknown"]),
        st.sampled_from(["Feminine", "Masculine", "NonSpecifiedUnknown"]),
        st.sampled_from(["CD", "RW", "PE", "FR", "CN", "Unknown"]),
        st.sampled_from(["CD", "GH", "PE", "ID"]),
        st.sampled_from(["2023", "2024", "2025", "2026"]),
    ),
    max_size=150,
)


@settings(max_examples=60, deadline=None)
@given(rows_strategy, st.integers(min_value=2, max_value=15))
def test_every_result_is_k_anonymous_and_accounts_for_every_row(
    rows: list[dict[str, str]], k: int
) -> None:
    result = anonymise(rows, k)
    assert len(result.rows) + result.suppressed == len(rows)
    if result.rows:
        assert smallest_group(result.rows) >= k
    # the same rows in another order give the same result
    again = anonymise(list(reversed(rows)), k)
    assert again.rows == result.rows and again.applied == result.applied
