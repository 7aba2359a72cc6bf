"""Data sources: one module per product plus the synthetic demo scene and download manifests."""
