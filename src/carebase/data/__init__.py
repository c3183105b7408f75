"""Data in and out: the synthetic demo population, importers and bulk loading."""
