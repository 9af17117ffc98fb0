"""Serving: SavedModel export, one function per signature (export). The four uses it serves are
`ebmkit.models.inference`.
"""
