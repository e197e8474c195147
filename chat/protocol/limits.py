"""Protocol constants and every size limit (PROTOCOL.md, section "Limits")."""

PROTOCOL_VERSION = 1
#: RSA-OAEP(SHA-256, MGF1-SHA-256) + X25519 + HKDF-SHA256 + AES-256-GCM.
SUITE_ID = 1

#: Largest WebSocket message either side accepts (a record of the largest envelope).
MAX_FRAME_BYTES = (1 << 20) + 64
#: Largest decrypted envelope.
MAX_ENVELOPE_BYTES = 1 << 20
#: Largest JSON header inside an envelope.
MAX_HEADER_BYTES = 64 * 1024
#: Largest handshake message (a ClientHello wrapped with an 8192-bit key is 1,127 bytes).
MAX_HANDSHAKE_BYTES = 2048
#: Characters in one chat text (broadcast, private or group message).
MAX_TEXT_CHARS = 4096
#: Characters in a username or group name.
MAX_NAME_CHARS = 32
#: Entries in a list field (for example the members named in group_create).
MAX_LIST_ITEMS = 1024
#: Names in one presence event (``user_joined`` / ``user_exited``).
MAX_PRESENCE_NAMES = 256
#: Bytes of file data carried by one file_chunk envelope.
MAX_CHUNK_BYTES = 256 * 1024
#: Characters in a file name as offered by the sender.
MAX_FILE_NAME_CHARS = 255
#: Characters in a password.
MAX_PASSWORD_CHARS = 1024
#: Characters of human-readable detail in an error event.
MAX_DETAIL_CHARS = 512
