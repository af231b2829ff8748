"""The tablet server role: stores and serves the rows of its tablets, logs every change."""
