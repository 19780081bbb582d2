"""File formats: points (CSV, JSON, GeoJSON), images, QuPath GeoJSON, atomic writes.

Everything that reads or writes a user's file goes through here: each reader bounds
what a file can make it allocate and names the file in its one-line error; each writer
writes beside the target and renames into place (:mod:`~sparsecell.formats.fileio`).
Imports only :mod:`sparsecell.errors`.
"""
