"""Parcel-locker lock boards on RS-485: the XOR frame codec and the bus driver."""

from firmware_bridge.lockboard.driver import LockBus, LockBusStats, LockNotOpened

__all__ = ["LockBus", "LockBusStats", "LockNotOpened"]
