"""ISO 4217 currencies and the amounts Remedy accepts in them (docs/domain.md, The remedy ledger).

Pure module: standard library only. `MINOR_UNITS` lists the active alphabetic codes with the
number of decimals each allows (list one of ISO 4217; codes without minor units, such as gold or
the SDR, are left out: nobody is repaid in them). `parse_amount` is the one gate every amount
passes, at intake and on the command line alike: a `Decimal`, never a float.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# the largest amount accepted in any one entry or payment, in the currency's main unit
MAX_AMOUNT = Decimal("1000000000000")

MINOR_UNITS: dict[str, int] = {
    "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "AOA": 2, "ARS": 2, "AUD": 2, "AWG": 2, "AZN": 2,
    "BAM": 2, "BBD": 2, "BDT": 2, "BGN": 2, "BHD": 3, "BIF": 0, "BMD": 2, "BND": 2, "BOB": 2,
    "BOV": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2, "BYN": 2, "BZD": 2,
    "CAD": 2, "CDF": 2, "CHE": 2, "CHF": 2, "CHW": 2, "CLF": 4, "CLP": 0, "CNY": 2, "COP": 2,
    "COU": 2, "CRC": 2, "CUP": 2, "CVE": 2, "CZK": 2,
    "DJF": 0, "DKK": 2, "DOP": 2, "DZD": 2,
    "EGP": 2, "ERN": 2, "ETB": 2, "EUR": 2,
    "FJD": 2, "FKP": 2,
    "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2, "GNF": 0, "GTQ": 2, "GYD": 2,
    "HKD": 2, "HNL": 2, "HTG": 2, "HUF": 2,
    "IDR": 2, "ILS": 2, "INR": 2, "IQD": 3, "IRR": 2, "ISK": 0,
    "JMD": 2, "JOD": 3, "JPY": 0,
    "KES": 2, "KGS": 2, "KHR": 2, "KMF": 0, "KPW": 2, "KRW": 0, "KWD": 3, "KYD": 2, "KZT": 2,
    "LAK": 2, "LBP": 2, "LKR": 2, "LRD": 2, "LSL": 2, "LYD": 3,
    "MAD": 2, "MDL": 2, "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2, "MUR": 2,
    "MVR": 2, "MWK": 2, "MXN": 2, "MXV": 2, "MYR": 2, "MZN": 2,
    "NAD": 2, "NGN": 2, "NIO": 2, "NOK": 2, "NPR": 2, "NZD": 2,
    "OMR": 3,
    "PAB": 2, "PEN": 2, "PGK": 2, "PHP": 2, "PKR": 2, "PLN": 2, "PYG": 0,
    "QAR": 2,
    "RON": 2, "RSD": 2, "RUB": 2, "RWF": 0,
    "SAR": 2, "SBD": 2, "SCR": 2, "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2, "SLE": 2, "SOS": 2,
    "SRD": 2, "SSP": 2, "STN": 2, "SVC": 2, "SYP": 2, "SZL": 2,
    "THB": 2, "TJS": 2, "TMT": 2, "TND": 3, "TOP": 2, "TRY": 2, "TTD": 2, "TWD": 2, "TZS": 2,
    "UAH": 2, "UGX": 0, "USD": 2, "USN": 2, "UYI": 0, "UYU": 2, "UYW": 4, "UZS": 2,
    "VED": 2, "VES": 2, "VND": 0, "VUV": 0,
    "WST": 2,
    "XAF": 0, "XCD": 2, "XCG": 2, "XOF": 0, "XPF": 0,
    "YER": 2,
    "ZAR": 2, "ZMW": 2, "ZWG": 2,
}  # fmt: skip


class AmountError(ValueError):
    """An amount or currency is not accepted; the message says why."""


def check_currency(code: str) -> str:
    """Return an active ISO 4217 code (upper case), or raise AmountError naming it."""
    upper = code.strip().upper()
    if upper not in MINOR_UNITS:
        shown = code.strip()[:8]
        raise AmountError(f"currency {shown!r} is not an active ISO 4217 code such as USD or CDF")
    return upper


def parse_amount(value: Decimal | str | int, currency: str) -> Decimal:
    """Return `value` as an exact Decimal in `currency`, or raise AmountError saying why.

    Refused: floats (they are not exact), anything that is not a number, NaN or infinity, zero or
    less, more than MAX_AMOUNT, and more decimals than the currency has (0.5 JPY, 1.001 USD).
    """
    code = check_currency(currency)
    if isinstance(value, bool) or not isinstance(value, Decimal | str | int):
        raise AmountError(
            f"an amount is written as a number or a string such as '1500.00', "
            f"not as {type(value).__name__}"
        )
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError):
        raise AmountError(f"amount {str(value)[:40]!r} is not a number") from None
    if not amount.is_finite():
        raise AmountError("an amount must be a finite number (not NaN or infinity)")
    if amount <= 0:
        raise AmountError(f"an amount must be more than zero, not {amount}")
    if amount > MAX_AMOUNT:
        raise AmountError(f"an amount cannot exceed {MAX_AMOUNT:,} {code}")
    decimals = MINOR_UNITS[code]
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > decimals:
        raise AmountError(f"{amount} {code} has more decimals than {code} allows ({decimals})")
    return amount.quantize(Decimal(1).scaleb(-decimals))


def format_amount(amount: Decimal, currency: str) -> str:
    """Write an amount for people: grouped thousands, the currency's decimals, then the code
    ("45,000.00 USD", "1,500 JPY"); the same in every language, so that no reader misreads it."""
    decimals = MINOR_UNITS.get(currency, 2)
    return f"{amount:,.{decimals}f} {currency}"


def in_units(amount: Decimal, currency: str) -> Decimal:
    """Return a stored amount with exactly the currency's decimals (the store keeps four)."""
    return amount.quantize(Decimal(1).scaleb(-MINOR_UNITS.get(currency, 4)))
