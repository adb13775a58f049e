/**
 * The chunked transfer coding (RFC 9112 section 7.1) followed byte by byte without copying: the lean path passes a
 * chunked body on as it came (its framing checked, never rewritten), so it needs only to know where the body ends
 * and that the framing is sound: hex chunk sizes (at most 12 digits), extensions of visible characters only,
 * CRLF after each size line and each chunk's data, trailer lines without bare CR or LF. Anything else is an
 * Http1Error (HTTP1_BAD_CHUNK), as llhttp refuses it.
 *
 * Owns: that state machine. Must not know about: heads, sockets, what the body is for. Hot path: no allocation per
 * chunk; the state lives on the one decoder object per connection, reset per message.
 */
import { Http1Error } from './errors.ts';

/** Where the decoder is in the coding. */
const S_SIZE = 0;
const S_EXTENSION = 1;
const S_SIZE_LF = 2;
const S_DATA = 3;
const S_DATA_CR = 4;
const S_DATA_LF = 5;
const S_TRAILER_START = 6;
const S_TRAILER = 7;
const S_TRAILER_LF = 8;
const S_FINAL_LF = 9;
const S_DONE = 10;

/** Hex digits a chunk size may have (12: up to 256 TiB, more than any body here). */
const MAX_SIZE_DIGITS = 12;
/** Bytes of extensions on one size line (llhttp has no limit; this bounds the work a peer can cause). */
const MAX_EXTENSION_BYTES = 4096;
/** Bytes of trailer fields. */
const MAX_TRAILER_BYTES = 16 * 1024;

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x61 && code <= 0x66) return code - 0x57;
  if (code >= 0x41 && code <= 0x46) return code - 0x37;
  return -1;
}

export class ChunkedDecoder {
  #state: number = S_SIZE;
  #digits = 0;
  #remaining = 0;
  #lineBytes = 0;
  /** Bytes of chunk data seen (the body's length without framing). */
  dataBytes = 0;

  reset(): void {
    this.#state = S_SIZE;
    this.#digits = 0;
    this.#remaining = 0;
    this.#lineBytes = 0;
    this.dataBytes = 0;
  }

  get done(): boolean {
    return this.#state === S_DONE;
  }

  /**
   * Follows bytes[start, end): the index just after the body's last byte when it ends in this range, -1 when it
   * goes on, or an Http1Error.
   */
  feed(bytes: Buffer, start: number, end: number): number | Http1Error {
    let index = start;
    while (index < end) {
      switch (this.#state) {
        case S_DATA: {
          const take = Math.min(this.#remaining, end - index);
          index += take;
          this.#remaining -= take;
          this.dataBytes += take;
          if (this.#remaining === 0) this.#state = S_DATA_CR;
          continue;
        }
        case S_SIZE: {
          const code = bytes[index]!;
          const value = hexValue(code);
          if (value >= 0) {
            if (++this.#digits > MAX_SIZE_DIGITS) return new Http1Error('HTTP1_BAD_CHUNK', `a chunk size over ${MAX_SIZE_DIGITS} hex digits`);
            this.#remaining = this.#remaining * 16 + value;
          } else if (this.#digits === 0) {
            return new Http1Error('HTTP1_BAD_CHUNK', `chunk size starts with 0x${code.toString(16)}, not a hex digit`);
          } else if (code === 0x0d) {
            this.#state = S_SIZE_LF;
          } else if (code === 0x3b /* ; */) {
            this.#state = S_EXTENSION;
            this.#lineBytes = 0;
          } else {
            return new Http1Error('HTTP1_BAD_CHUNK', `0x${code.toString(16)} after a chunk size`);
          }
          break;
        }
        case S_EXTENSION: {
          const code = bytes[index]!;
          if (code === 0x0d) this.#state = S_SIZE_LF;
          else if ((code < 0x20 && code !== 0x09) || code === 0x7f) return new Http1Error('HTTP1_BAD_CHUNK', `control character 0x${code.toString(16)} in a chunk extension`);
          else if (++this.#lineBytes > MAX_EXTENSION_BYTES) return new Http1Error('HTTP1_BAD_CHUNK', `chunk extensions over ${MAX_EXTENSION_BYTES} bytes`);
          break;
        }
        case S_SIZE_LF: {
          if (bytes[index] !== 0x0a) return new Http1Error('HTTP1_BAD_CHUNK', 'a chunk size line without CRLF');
          this.#digits = 0;
          if (this.#remaining === 0) {
            this.#state = S_TRAILER_START;
            this.#lineBytes = 0;
          } else {
            this.#state = S_DATA;
          }
          break;
        }
        case S_DATA_CR:
          if (bytes[index] !== 0x0d) return new Http1Error('HTTP1_BAD_CHUNK', 'chunk data longer than its size');
          this.#state = S_DATA_LF;
          break;
        case S_DATA_LF:
          if (bytes[index] !== 0x0a) return new Http1Error('HTTP1_BAD_CHUNK', 'chunk data without its CRLF');
          this.#state = S_SIZE;
          break;
        case S_TRAILER_START: {
          const code = bytes[index]!;
          if (code === 0x0d) {
            this.#state = S_FINAL_LF;
          } else if (code === 0x0a || code === 0x20 || code === 0x09) {
            return new Http1Error('HTTP1_BAD_CHUNK', 'a bare LF or a folded line in the trailers');
          } else {
            this.#state = S_TRAILER;
            if (++this.#lineBytes > MAX_TRAILER_BYTES) return new Http1Error('HTTP1_BAD_CHUNK', `trailers over ${MAX_TRAILER_BYTES} bytes`);
          }
          break;
        }
        case S_TRAILER: {
          const code = bytes[index]!;
          if (code === 0x0d) this.#state = S_TRAILER_LF;
          else if (code === 0x0a || code === 0 || code === 0x7f) return new Http1Error('HTTP1_BAD_CHUNK', `0x${code.toString(16)} in a trailer line`);
          else if (++this.#lineBytes > MAX_TRAILER_BYTES) return new Http1Error('HTTP1_BAD_CHUNK', `trailers over ${MAX_TRAILER_BYTES} bytes`);
          break;
        }
        case S_TRAILER_LF:
          if (bytes[index] !== 0x0a) return new Http1Error('HTTP1_BAD_CHUNK', 'a bare CR in the trailers');
          this.#state = S_TRAILER_START;
          break;
        case S_FINAL_LF:
          if (bytes[index] !== 0x0a) return new Http1Error('HTTP1_BAD_CHUNK', 'the last chunk without its final CRLF');
          this.#state = S_DONE;
          return index + 1;
        case S_DONE:
          return index;
      }
      index++;
    }
    return -1;
  }
}
