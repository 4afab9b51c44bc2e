"""Labelwise: turn raw data into high-quality training labels at the lowest human cost."""
