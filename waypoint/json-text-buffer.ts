/**
 * JSON text written straight into a growing byte buffer: the access log's lines are built here, field by field,
 * rather than as a string per field joined by templates (a quoted string, a number's digits, a template's cons
 * string and its flattening: about 2.5 KB of V8 heap per request in session s12's heap profile). A string of
 * printable ASCII without `"` or `\` is copied byte by byte as it is checked (no string made); any other string is
 * escaped by JSON.stringify, so what a peer chose (a path, a Host, a request id) stays one valid JSON string.
 * Integers are written as digits; other numbers as JSON.stringify writes them (non-finite ones as null).
 *
 * Owns: the bytes, their growth and JSON's escaping. Must not know about: what the text says or where it goes.
 * Hot path: nothing allocated per value except an escaped string's JSON text.
 */

/** Characters written per value before a check of the room left is needed again (a digit run, a short constant). */
const NUMBER_ROOM = 24;

export class JsonTextBuffer {
  bytes: Buffer;
  /** Bytes written so far. */
  length = 0;

  constructor(capacity: number) {
    this.bytes = Buffer.allocUnsafeSlow(capacity);
  }

  /** Room for `count` more bytes (the buffer grows, its bytes copied, when there is not). */
  ensure(count: number): void {
    const needed = this.length + count;
    if (needed <= this.bytes.length) return;
    const grown = Buffer.allocUnsafeSlow(Math.max(needed, this.bytes.length * 2));
    this.bytes.copy(grown, 0, 0, this.length);
    this.bytes = grown;
  }

  /** Bytes made once (a constant's, a reused block's encoding). */
  raw(encoded: Uint8Array): void {
    this.ensure(encoded.length);
    this.bytes.set(encoded, this.length);
    this.length += encoded.length;
  }

  /** Text that is JSON already (pino's framing, a reused block's text): written as UTF-8, unchanged. */
  text(text: string): void {
    const count = text.length;
    this.ensure(count);
    const bytes = this.bytes;
    let at = this.length;
    for (let index = 0; index < count; index++) {
      const code = text.charCodeAt(index);
      if (code > 0x7f) {
        this.#utf8(text);
        return;
      }
      bytes[at++] = code;
    }
    this.length = at;
  }

  /** A JSON string literal of `value`: copied as it is checked when it needs no escape, else JSON.stringify's text. */
  quoted(value: string): void {
    const count = value.length;
    this.ensure(count + 2);
    const bytes = this.bytes;
    let at = this.length;
    bytes[at++] = 0x22;
    for (let index = 0; index < count; index++) {
      const code = value.charCodeAt(index);
      if (code < 0x20 || code === 0x22 || code === 0x5c || code > 0x7e) {
        this.#utf8(JSON.stringify(value));
        return;
      }
      bytes[at++] = code;
    }
    bytes[at++] = 0x22;
    this.length = at;
  }

  /** A number as JSON.stringify writes it: a safe non-negative integer as its digits, NaN and infinities as null. */
  number(value: number): void {
    if (!(value >= 0 && value <= Number.MAX_SAFE_INTEGER && Math.floor(value) === value)) {
      this.text(Number.isFinite(value) ? String(value) : 'null');
      return;
    }
    this.ensure(NUMBER_ROOM);
    const bytes = this.bytes;
    let digits = 1;
    for (let rest = value; rest >= 10; rest = Math.floor(rest / 10)) digits++;
    let at = this.length + digits;
    this.length = at;
    let rest = value;
    do {
      bytes[--at] = 0x30 + (rest % 10);
      rest = Math.floor(rest / 10);
    } while (rest > 0);
  }

  /** Drops what was written from `length` on (a line that failed half way). */
  truncate(length: number): void {
    this.length = length;
  }

  /** The text written (tests, and loggers that take strings). */
  toString(): string {
    return this.bytes.toString('utf8', 0, this.length);
  }

  #utf8(text: string): void {
    this.ensure(Buffer.byteLength(text));
    this.length += this.bytes.write(text, this.length, 'utf8');
  }
}

/** `text` encoded once, for JsonTextBuffer.raw. */
export function encodedOnce(text: string): Uint8Array {
  return Buffer.from(text, 'utf8');
}
