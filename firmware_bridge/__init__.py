"""Talking to device firmware: drivers, frame codecs and simulators."""
