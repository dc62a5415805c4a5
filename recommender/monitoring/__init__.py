"""Monitoring figures of the offer service: is the model still calibrated and the data stable?

``reliability`` compares predicted propensities with observed acceptance (per group, by
decile, and take-up per product), ``drift`` measures the population stability index of the
features, ``plot`` draws the calibration curve as plain SVG and writes a report atomically.

A pure library: may import only ``recommender.data`` and ``recommender.exceptions``.
"""
