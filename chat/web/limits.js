// The limits of PROTOCOL.md section 5 (names as in the reference implementation).

export const PROTOCOL_VERSION = 1;
export const SUITE_ID = 1;
export const MAX_FRAME_BYTES = 2 ** 20 + 64;
export const MAX_HANDSHAKE_BYTES = 2048;
export const MAX_ENVELOPE_BYTES = 2 ** 20;
export const MAX_HEADER_BYTES = 64 * 1024;
export const MAX_TEXT_CHARS = 4096;
export const MAX_NAME_CHARS = 32;
export const MAX_LIST_ITEMS = 1024;
export const MAX_PRESENCE_NAMES = 256;
export const MAX_CHUNK_BYTES = 256 * 1024;
export const MAX_FILE_NAME_CHARS = 255;
export const MAX_PASSWORD_CHARS = 1024;
export const MAX_DETAIL_CHARS = 512;
export const MAX_HISTORY = 1000;
export const MAX_SEARCH_CHARS = 200;
export const TAG_LEN = 16;
export const MIN_RECORD_LEN = 1 + TAG_LEN;
export const MAX_RECORD_LEN = 1 + MAX_ENVELOPE_BYTES + TAG_LEN;
export const MAX_BYTES_PER_KEY = 2 ** 36;
export const MAX_REQUEST_ID = 2 ** 31 - 1;

/** Length in Unicode code points (PROTOCOL.md: "characters"). */
export function chars(text) {
  let n = 0;
  for (const _ of text) n++;
  return n;
}
