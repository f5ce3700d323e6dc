"""Cross-matching of alerts in time and sky.

Pure computation with no I/O: the broker feeds alerts in and stores what comes
out.  :mod:`crossmatch.healpix` holds the order-29 NESTED HEALPix indexing the
archive and the live index share.
"""
