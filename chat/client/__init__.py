"""The chat client: ``commands`` parses input lines, ``render`` turns events into lines,
``transport`` runs the connection and handshake, ``app`` is the program around them."""
