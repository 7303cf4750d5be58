"""Protocol packages shared by the sources and sinks that speak each protocol."""
