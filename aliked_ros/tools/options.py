"""argparse types for the tools' numeric options: a value out of range is a one-line usage error (exit 2), not a
traceback from deep inside, nor silently taken as "no limit"."""
from __future__ import annotations

import argparse

from aliked_ros.ros.dds import MAX_DOMAIN_ID


def _number(kind, check, wanted: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"{text} is not {wanted}")
        return value
    parse.__name__ = f"{wanted} {kind.__name__}"
    return parse


positive_int = _number(int, lambda v: v >= 1, ">= 1")
non_negative_int = _number(int, lambda v: v >= 0, ">= 0")
positive_float = _number(float, lambda v: v > 0, "> 0")
non_negative_float = _number(float, lambda v: v >= 0, ">= 0")
# ROS_DOMAIN_ID: 0..232 as ROS 2 allows (0..101 stay clear of Linux's ephemeral ports, which 102-232 may meet)
domain_id = _number(int, lambda v: 0 <= v <= MAX_DOMAIN_ID, f"a ROS_DOMAIN_ID (0..{MAX_DOMAIN_ID})")
