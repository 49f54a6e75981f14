"""Conversion to TFLite: graph sources (export folders and TFOD bundles), TFOD pipeline.config
reading and writing, precision recipes and calibration data."""
