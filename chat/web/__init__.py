"""The browser client's files (index.html, its modules and style), served by
chat/server/web.py; a package only so that they install with ``pip install``."""
