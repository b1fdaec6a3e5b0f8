"""Layer 1, the vocabulary: names and shapes every other layer shares.

Nothing here imports anything of fastgate. The usage record's field order, the
usage codec, the error table and the header name sets live here once.
"""
