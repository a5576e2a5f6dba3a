"""Prices for the example shop: what the example pipeline builds and tests."""


def line_total(unit_cents: int, quantity: int) -> int:
    if quantity < 0:
        raise ValueError("quantity must not be negative")
    return unit_cents * quantity


def apply_discount(total_cents: int, percent: int) -> int:
    if not 0 <= percent <= 100:
        raise ValueError("percent must be between 0 and 100")
    return total_cents - (total_cents * percent) // 100


def order_total(lines: list[tuple[int, int]], discount_percent: int = 0) -> int:
    return apply_discount(sum(line_total(u, q) for u, q in lines), discount_percent)
