"""Exception base class. Each concern defines its own subclass beside its code (weights, calibration, dataset,
...), and its message says what the user must fix. ``aliked-vo`` prints these without a traceback."""


class AlikedRosError(Exception):
    """Base of all errors raised on purpose by aliked_ros."""
