"""Money as the office handles it: integers in the meter's minor units, decimal strings at
the edges (the API, the CLI, the meters' messages). ASCII digits only, never a float."""

from tools.vend import core


class AmountError(ValueError):
    pass


def parse(text, decimals):
    """Minor units of a non-negative decimal string such as "10.00"."""
    if not isinstance(text, str):
        raise AmountError('a decimal string such as "10.00" expected')
    try:
        return core.parse_money(text, decimals)
    except core.VendError as e:
        raise AmountError(str(e).split(": ", 1)[-1]) from None


def parse_signed(text, decimals):
    """Minor units of a meter's money field ("-1.50" when it runs on emergency credit)."""
    if isinstance(text, str) and text.startswith("-"):
        return -parse(text[1:], decimals)
    return parse(text, decimals)


def text(units, decimals):
    """The decimal string of minor units (None stays None)."""
    if units is None:
        return None
    if units < 0:
        return "-" + core.format_money(-units, decimals)
    return core.format_money(units, decimals)
