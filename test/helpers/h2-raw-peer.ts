/**
 * A hand-driven HTTP/2 peer for tests of ambit's own HTTP/2 layer: it writes whatever frames a test builds
 * (hostile ones included) over a real loopback TCP connection and records every frame our side sends back,
 * parsed with the layer's FrameReader. Also builds our side (an H2Connection on the accepted or dialed socket).
 * Used by tests only.
 */
import net from 'node:net';
import { H2Connection, type H2ConnectionOptions } from '../../shared/hbone/h2/connection.ts';
import {
  allocFrame,
  CLIENT_PREFACE,
  FLAG_END_HEADERS,
  FRAME_GOAWAY,
  FRAME_HEADER_BYTES,
  FRAME_HEADERS,
  FRAME_RST_STREAM,
  FrameReader,
  settingsFrame,
} from '../../shared/hbone/h2/frame.ts';
import { HpackEncoder } from '../../shared/hbone/h2/hpack.ts';
import type { H2Stream } from '../../shared/hbone/h2/stream.ts';

export interface ReceivedFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = allocFrame(payload.length, type, flags, streamId);
  payload.copy(out, FRAME_HEADER_BYTES);
  return out;
}

const encoder = new HpackEncoder();

/** A HEADERS frame (END_HEADERS, plus `flags`) carrying `headers` encoded by our encoder. */
export function headersFrame(streamId: number, headers: string[], flags = 0): Buffer {
  return frame(FRAME_HEADERS, FLAG_END_HEADERS | flags, streamId, encoder.encode(headers));
}

export const CONNECT_HEADERS = [':method', 'CONNECT', ':authority', '10.0.0.1:80'];

export class RawPeer {
  readonly socket: net.Socket;
  readonly frames: ReceivedFrame[] = [];
  readonly closed: Promise<void>;
  #waiters: Array<() => void> = [];

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('error', () => {});
    const reader = new FrameReader(
      {
        onFrame: (type, flags, streamId, chunk, start, end) => this.#record({ type, flags, streamId, payload: Buffer.from(chunk.subarray(start, end)) }),
        onDataStart: (streamId, flags, length) => this.#record({ type: 0, flags, streamId, payload: Buffer.alloc(length) }),
        onData: () => {},
        onDataEnd: () => {},
      },
      16_777_215,
    );
    let prefaceSkipped = 0;
    socket.on('data', (chunk: Buffer) => {
      // A raw server peer first sees our client's preface: skip it.
      if (this.expectPreface && prefaceSkipped < CLIENT_PREFACE.length) {
        const take = Math.min(CLIENT_PREFACE.length - prefaceSkipped, chunk.length);
        prefaceSkipped += take;
        chunk = chunk.subarray(take);
        if (chunk.length === 0) return;
      }
      try {
        reader.push(chunk);
      } catch {
        socket.destroy();
      }
    });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.once('close', () => this.#wake());
  }

  expectPreface = false;

  #record(received: ReceivedFrame): void {
    this.frames.push(received);
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  send(...buffers: Buffer[]): void {
    if (!this.socket.destroyed) this.socket.write(Buffer.concat(buffers));
  }

  /** Resolves with the first frame (already received or to come) matching `match`; rejects after `timeoutMs`. */
  async waitFor(match: (received: ReceivedFrame) => boolean, timeoutMs = 5000): Promise<ReceivedFrame> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const found = this.frames.find(match);
      if (found) return found;
      if (this.socket.closed) {
        throw new Error(`connection closed without a matching frame; got types ${this.frames.map((f) => f.type).join(',')}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching frame within ${timeoutMs} ms; got types ${this.frames.map((f) => f.type).join(',')}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** The GOAWAY our side sent: its error code (waits for it). */
  async goawayCode(): Promise<number> {
    const goaway = await this.waitFor((received) => received.type === FRAME_GOAWAY);
    return goaway.payload.readUInt32BE(4);
  }

  /** The RST_STREAM code our side sent on `streamId` (waits for it). */
  async rstCode(streamId: number): Promise<number> {
    const reset = await this.waitFor((received) => received.type === FRAME_RST_STREAM && received.streamId === streamId);
    return reset.payload.readUInt32BE(0);
  }
}

export interface ServerUnderTest {
  peer: RawPeer;
  connection: H2Connection;
  streams: H2Stream[];
  close(): void;
}

/**
 * Our server-side H2Connection on a loopback socket, and a raw client peer on the other end that already sent
 * the preface and an empty SETTINGS (unless `handshake` is false).
 */
export async function serverUnderTest(options: Partial<H2ConnectionOptions> = {}, handshake = true): Promise<ServerUnderTest> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  const socket = await accepted;
  listener.close();
  socket.on('error', () => {});
  const connection = new H2Connection(socket, { role: 'server', ...options });
  const streams: H2Stream[] = [];
  connection.on('stream', (stream: H2Stream) => streams.push(stream));
  const peer = new RawPeer(client);
  if (handshake) peer.send(CLIENT_PREFACE, settingsFrame([]));
  return {
    peer,
    connection,
    streams,
    close: () => {
      connection.destroy();
      client.destroy();
      socket.destroy();
    },
  };
}

export interface ClientUnderTest {
  peer: RawPeer;
  connection: H2Connection;
  close(): void;
}

/** Our client-side H2Connection dialed to a raw server peer, which has sent an empty SETTINGS. */
export async function clientUnderTest(options: Partial<H2ConnectionOptions> = {}): Promise<ClientUnderTest> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const socket = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  const serverSide = await accepted;
  listener.close();
  socket.on('error', () => {});
  const peer = new RawPeer(serverSide);
  peer.expectPreface = true;
  const connection = new H2Connection(socket, { role: 'client', ...options });
  peer.send(settingsFrame([]));
  await new Promise<void>((resolve) => (connection.remoteSettingsReceived ? resolve() : connection.once('remoteSettings', () => resolve())));
  return {
    peer,
    connection,
    close: () => {
      connection.destroy();
      socket.destroy();
      serverSide.destroy();
    },
  };
}

/** A pair of our own connections (client and server) over loopback TCP, for behaviour both ends implement. */
export async function connectionPair(client: Partial<H2ConnectionOptions> = {}, server: Partial<H2ConnectionOptions> = {}): Promise<{
  client: H2Connection;
  server: H2Connection;
  serverStreams: H2Stream[];
  nextServerStream(): Promise<H2Stream>;
  close(): void;
}> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const clientSocket = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  const serverSocket = await accepted;
  listener.close();
  clientSocket.on('error', () => {});
  serverSocket.on('error', () => {});
  const serverConnection = new H2Connection(serverSocket, { role: 'server', ...server });
  const clientConnection = new H2Connection(clientSocket, { role: 'client', ...client });
  const serverStreams: H2Stream[] = [];
  let waiting: ((stream: H2Stream) => void) | undefined;
  serverConnection.on('stream', (stream: H2Stream) => {
    serverStreams.push(stream);
    waiting?.(stream);
    waiting = undefined;
  });
  await new Promise<void>((resolve) => clientConnection.once('remoteSettings', () => resolve()));
  return {
    client: clientConnection,
    server: serverConnection,
    serverStreams,
    nextServerStream: () => new Promise((resolve) => (waiting = resolve)),
    close: () => {
      clientConnection.destroy();
      serverConnection.destroy();
      clientSocket.destroy();
      serverSocket.destroy();
    },
  };
}
