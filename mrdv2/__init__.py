"""MRD v2 (the yardl-defined binary stream of ismrmrd/mrd) beside v1, on the same port and in stream mode.

``mrdv2.stream`` gives a v2 stream (told apart by its first byte, ``connection.stream_format``)
the faces of the v1 reader and writer (``V2Reader``, ``V2Writer``), so that sessions and modules run
unchanged; ``mrdv2.convert`` maps headers, acquisitions, waveforms and images between the two
(docs/protocol.md §11).
"""
