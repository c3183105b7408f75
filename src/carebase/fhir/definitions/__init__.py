"""Generated R4 definitions (data) and their loader."""
