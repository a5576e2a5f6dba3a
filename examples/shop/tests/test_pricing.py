import unittest

from shop.pricing import apply_discount, line_total, order_total


class LineTotalTests(unittest.TestCase):
    def test_multiplies(self):
        self.assertEqual(line_total(250, 4), 1000)

    def test_rejects_negative_quantity(self):
        with self.assertRaises(ValueError):
            line_total(100, -1)


class DiscountTests(unittest.TestCase):
    def test_ten_percent(self):
        self.assertEqual(apply_discount(1000, 10), 900)

    def test_rejects_out_of_range(self):
        with self.assertRaises(ValueError):
            apply_discount(1000, 101)


class OrderTests(unittest.TestCase):
    def test_order_with_discount(self):
        self.assertEqual(order_total([(250, 4), (100, 1)], 10), 990)

    def test_empty_order(self):
        self.assertEqual(order_total([]), 0)
