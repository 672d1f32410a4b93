"""The preference-data audit's measured studies: power and calibration, held-out accuracy, shaping."""
