/**
 * The frame codec of ambit's own HTTP/2 layer: frames cut the same whatever the chunking (property), DATA
 * handed on in place with padding removed, the size rules, and arbitrary bytes raising only H2Error.
 */
import test from 'ava';
import fc from 'fast-check';
import { H2_FRAME_SIZE_ERROR, H2_PROTOCOL_ERROR, H2Error, isH2Error } from '../../shared/hbone/h2/errors.ts';
import {
  allocFrame,
  FLAG_PADDED,
  FRAME_DATA,
  FRAME_HEADER_BYTES,
  FRAME_HEADERS,
  FRAME_PING,
  FRAME_SETTINGS,
  FrameReader,
  type FrameReceiver,
  goawayFrame,
  pingFrame,
  rstStreamFrame,
  windowUpdateFrame,
} from '../../shared/hbone/h2/frame.ts';

interface Seen {
  type: number;
  flags: number;
  streamId: number;
  payload: string;
}

/** Records frames as hex; DATA pieces are joined per frame (and the number of pieces kept aside). */
class Recorder implements FrameReceiver {
  readonly frames: Seen[] = [];
  #data: Buffer[] = [];
  #dataFrame: Seen | undefined;
  copies = 0;

  onFrame(type: number, flags: number, streamId: number, chunk: Buffer, start: number, end: number): void {
    this.frames.push({ type, flags, streamId, payload: chunk.toString('hex', start, end) });
  }

  onDataStart(streamId: number, flags: number): void {
    this.#dataFrame = { type: FRAME_DATA, flags, streamId, payload: '' };
    this.#data = [];
  }

  onData(chunk: Buffer, start: number, end: number): void {
    this.#data.push(chunk.subarray(start, end));
  }

  onDataEnd(): void {
    this.#dataFrame!.payload = Buffer.concat(this.#data).toString('hex');
    this.frames.push(this.#dataFrame!);
  }
}

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const out = allocFrame(payload.length, type, flags, streamId);
  payload.copy(out, FRAME_HEADER_BYTES);
  return out;
}

function readerError(bytes: Buffer, maxFrameSize = 16_384): H2Error {
  try {
    new FrameReader(new Recorder(), maxFrameSize).push(bytes);
  } catch (error) {
    if (error instanceof H2Error) return error;
    throw error;
  }
  throw new Error('no error');
}

const arbitraryFrame = fc.oneof(
  fc.record({ kind: fc.constant('data' as const), streamId: fc.integer({ min: 1, max: 2 ** 31 - 1 }), flags: fc.constantFrom(0, 1), payload: fc.uint8Array({ maxLength: 3000 }), pad: fc.option(fc.integer({ min: 0, max: 255 })) }),
  fc.record({ kind: fc.constant('ping' as const), opaque: fc.uint8Array({ minLength: 8, maxLength: 8 }) }),
  fc.record({ kind: fc.constant('window' as const), streamId: fc.integer({ min: 0, max: 1000 }), increment: fc.integer({ min: 1, max: 2 ** 31 - 1 }) }),
  fc.record({ kind: fc.constant('headers' as const), streamId: fc.integer({ min: 1, max: 1000 }), payload: fc.uint8Array({ minLength: 1, maxLength: 500 }), pad: fc.option(fc.integer({ min: 0, max: 40 })) }),
  fc.record({ kind: fc.constant('unknown' as const), type: fc.integer({ min: 10, max: 255 }), payload: fc.uint8Array({ maxLength: 100 }) }),
);

type Arbitrary = typeof arbitraryFrame extends fc.Arbitrary<infer T> ? T : never;

/** The bytes of `spec` and what a reader must report for it (padding removed). */
function encode(spec: Arbitrary): { bytes: Buffer; expected: Seen } {
  switch (spec.kind) {
    case 'data':
    case 'headers': {
      const type = spec.kind === 'data' ? FRAME_DATA : FRAME_HEADERS;
      const flags = (spec.kind === 'data' ? spec.flags : 4) | (spec.pad !== null ? FLAG_PADDED : 0);
      const body = Buffer.from(spec.payload);
      const payload = spec.pad !== null ? Buffer.concat([Buffer.from([spec.pad]), body, Buffer.alloc(spec.pad, 0)]) : body;
      return { bytes: frame(type, flags, spec.streamId, payload), expected: { type, flags, streamId: spec.streamId, payload: body.toString('hex') } };
    }
    case 'ping':
      return { bytes: pingFrame(Buffer.from(spec.opaque), false), expected: { type: FRAME_PING, flags: 0, streamId: 0, payload: Buffer.from(spec.opaque).toString('hex') } };
    case 'window': {
      const bytes = windowUpdateFrame(spec.streamId, spec.increment);
      return { bytes, expected: { type: 8, flags: 0, streamId: spec.streamId, payload: bytes.toString('hex', 9) } };
    }
    case 'unknown':
      return { bytes: frame(spec.type, 0, 3, Buffer.from(spec.payload)), expected: { type: spec.type, flags: 0, streamId: 3, payload: Buffer.from(spec.payload).toString('hex') } };
  }
}

test('frames come out the same however the bytes are cut into chunks (property)', (t) => {
  fc.assert(
    fc.property(fc.array(arbitraryFrame, { minLength: 1, maxLength: 12 }), fc.array(fc.integer({ min: 1, max: 4000 }), { minLength: 1, maxLength: 30 }), (specs, cuts) => {
      const encoded = specs.map(encode);
      const stream = Buffer.concat(encoded.map((item) => item.bytes));
      const recorder = new Recorder();
      const reader = new FrameReader(recorder, 16_384);
      let offset = 0;
      let cut = 0;
      while (offset < stream.length) {
        const size = cuts[cut++ % cuts.length]!;
        reader.push(stream.subarray(offset, offset + size));
        offset += size;
      }
      t.deepEqual(recorder.frames, encoded.map((item) => item.expected));
    }),
    { numRuns: 400 },
  );
});

test('DATA is handed on in place: the pieces are views of the pushed chunk, not copies', (t) => {
  const payload = Buffer.alloc(10_000, 7);
  const chunk = frame(FRAME_DATA, 0, 1, payload);
  const pieces: Buffer[] = [];
  const reader = new FrameReader({ onFrame() {}, onDataStart() {}, onData: (c, s, e) => pieces.push(c.subarray(s, e)), onDataEnd() {} }, 16_384);
  reader.push(chunk.subarray(0, 5000));
  reader.push(chunk.subarray(5000));
  t.is(pieces.length, 2);
  t.is(pieces[0]!.buffer, chunk.buffer, 'the first piece shares the chunk memory');
  t.is(pieces[1]!.buffer, chunk.buffer);
  t.is(pieces.reduce((sum, piece) => sum + piece.length, 0), payload.length);
});

test('arbitrary bytes raise only H2Error (property)', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), fc.integer({ min: 1, max: 64 }), (bytes, cut) => {
      const reader = new FrameReader(new Recorder(), 16_384);
      try {
        for (let offset = 0; offset < bytes.length; offset += cut) reader.push(Buffer.from(bytes.subarray(offset, offset + cut)));
      } catch (error) {
        return isH2Error(error) && error.code === 'H2_PEER_PROTOCOL';
      }
      return true;
    }),
    { numRuns: 5000 },
  );
  t.pass();
});

test('size rules: too long for our SETTINGS_MAX_FRAME_SIZE, wrong fixed sizes, frames on the wrong stream', (t) => {
  t.is(readerError(frame(FRAME_DATA, 0, 1, Buffer.alloc(16_385))).wireCode, H2_FRAME_SIZE_ERROR);
  // The check happens on the header alone: a peer cannot make us buffer a 16 MiB frame first.
  const hugeHeader = allocFrame(0, FRAME_HEADERS, 4, 1);
  hugeHeader.writeUIntBE(0xffffff, 0, 3);
  t.is(readerError(hugeHeader).wireCode, H2_FRAME_SIZE_ERROR);
  t.is(readerError(frame(FRAME_PING, 0, 0, Buffer.alloc(7))).wireCode, H2_FRAME_SIZE_ERROR);
  t.is(readerError(frame(FRAME_SETTINGS, 0, 0, Buffer.alloc(5))).wireCode, H2_FRAME_SIZE_ERROR);
  t.is(readerError(frame(FRAME_SETTINGS, 1, 0, Buffer.alloc(6))).wireCode, H2_FRAME_SIZE_ERROR);
  t.is(readerError(frame(FRAME_SETTINGS, 0, 1, Buffer.alloc(6))).wireCode, H2_PROTOCOL_ERROR);
  t.is(readerError(frame(FRAME_PING, 0, 3, Buffer.alloc(8))).wireCode, H2_PROTOCOL_ERROR);
  t.is(readerError(frame(FRAME_DATA, 0, 0, Buffer.alloc(1))).wireCode, H2_PROTOCOL_ERROR);
  t.is(readerError(frame(FRAME_HEADERS, 4, 0, Buffer.alloc(1))).wireCode, H2_PROTOCOL_ERROR);
  t.is(readerError(Buffer.concat([rstStreamFrame(1, 0).subarray(0, 9), Buffer.alloc(5)]).fill(5, 0, 3)).wireCode, H2_FRAME_SIZE_ERROR);
  t.is(readerError(rstStreamFrame(0, 0)).wireCode, H2_PROTOCOL_ERROR);
  t.is(readerError(goawayFrame(0, 0).subarray(0, 9).fill(0, 0, 3)).wireCode, H2_FRAME_SIZE_ERROR);
  t.is(readerError(frame(8, 0, 0, Buffer.alloc(3))).wireCode, H2_FRAME_SIZE_ERROR);
});

test('padding longer than the frame is a PROTOCOL_ERROR, for DATA and HEADERS', (t) => {
  t.is(readerError(frame(FRAME_DATA, FLAG_PADDED, 1, Buffer.from([10, 1, 2]))).wireCode, H2_PROTOCOL_ERROR);
  t.is(readerError(frame(FRAME_HEADERS, FLAG_PADDED | 4, 1, Buffer.from([10, 1, 2]))).wireCode, H2_PROTOCOL_ERROR);
  t.is(readerError(frame(FRAME_DATA, FLAG_PADDED, 1, Buffer.alloc(0))).wireCode, H2_FRAME_SIZE_ERROR);
});
