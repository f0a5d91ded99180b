"""cityops-edge: edge video analytics for city operations."""
