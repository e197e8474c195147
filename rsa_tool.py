"""Create the chat server's RSA key pair: ``python rsa_tool.py [--dir DIR] [--bits N] [--force]``.

A thin wrapper around :func:`chat.keygen.main` (also installed as ``chat-keygen``), so that it
works from the repository root without installing the package.
"""

from chat.keygen import main

if __name__ == "__main__":
    raise SystemExit(main())
