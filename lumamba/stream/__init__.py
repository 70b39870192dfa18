"""Streaming demo host side: frame a recording, feed it to the demo firmware on an emulated board,
read its decisions back and check them against the golden model (`lumamba-stream`).

- ``framing``    the sample frame format (firmware/runtime/lumamba_stream.h) on the host
- ``protocol``   the demo firmware's output lines -> records
- ``recording``  EDF or .npz -> continuous microvolts in the model's channel order
- ``reference``  the device's int16 quantisation and normalisation (zscore, robust or fixed), bit for bit, and the reference logits
- ``runner``     build the demo ELF, start the board, stream, collect the decisions
- ``plot``       stream.png
- ``cli``        the ``lumamba-stream`` command
"""
