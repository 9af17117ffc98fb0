"""Serving: SavedModel export (export) with one function per signature (signatures). The
four uses it serves are `ebmkit.models.inference`.
"""
