/**
 * The runner's side of the "controlplane" suite's message channel to its agent processes
 * (bench/tools/xds-agents.ts): a Unix socket in the run directory carrying JSON lines both ways. Each agent
 * process connects, says which one it is, and then takes commands (connect, watch, sign, close) and reports
 * events (synced, seen, signed) stamped with its own clock; `syncClock` measures the offset between that clock
 * and ours so every timestamp can be compared with the moment the runner wrote a file.
 *
 * The processes themselves are started and stopped by the run's ProcessGroup; this is only their mailbox.
 * Owns: the socket, framing, waiting for a message with a timeout, clock offsets. Must not know about: xDS, the CA.
 */
import net from 'node:net';
import { rmSync } from 'node:fs';
import { createInterface, type Interface } from 'node:readline';

export type Message = { type: string } & Record<string, unknown>;

/** Wall-clock milliseconds with sub-millisecond resolution, comparable between processes on one machine. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

export class AgentPeer {
  readonly index: number;
  /** Add to a timestamp from this peer to get the runner's clock (measured by `syncClock`). */
  offsetMs = 0;
  readonly #socket: net.Socket;
  readonly #inbox: Message[] = [];
  readonly #waiters = new Set<() => void>();
  #closed: Error | undefined;

  constructor(index: number, socket: net.Socket, lines: Interface) {
    this.index = index;
    this.#socket = socket;
    lines.on('line', (line: string) => {
      try {
        this.#inbox.push(JSON.parse(line) as Message);
      } catch {
        return;
      }
      this.#wake();
    });
    socket.on('close', () => {
      this.#closed = new Error(`agent process ${index} closed its channel`);
      this.#wake();
    });
    socket.on('error', () => undefined);
  }

  send(message: Message): void {
    if (!this.#socket.destroyed) this.#socket.write(`${JSON.stringify(message)}\n`);
  }

  /** The next message of `type` (earlier messages of other types stay queued). */
  next<T extends Message>(type: string, timeoutMs: number, accept: (message: T) => boolean = () => true): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const position = this.#inbox.findIndex((message) => message.type === type && accept(message as T));
        if (position >= 0) {
          const [message] = this.#inbox.splice(position, 1);
          finish();
          resolve(message as T);
          return true;
        }
        if (this.#closed) {
          finish();
          reject(this.#closed);
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`agent process ${this.index}: no "${type}" message within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (): void => void check();
      const finish = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
      };
      if (!check()) this.#waiters.add(waiter);
    });
  }

  /** Drops queued messages of `type` (late answers to something already given up on). */
  discard(type: string): void {
    for (let i = this.#inbox.length - 1; i >= 0; i--) if (this.#inbox[i]!.type === type) this.#inbox.splice(i, 1);
  }

  /**
   * NTP-style offset: `rounds` pings, keeping the one with the shortest round trip; the peer's clock read is
   * assumed to sit in the middle of it. Error bound: half that round trip (reported).
   */
  async syncClock(rounds = 20): Promise<{ offsetMs: number; roundTripMs: number }> {
    let best = { offsetMs: 0, roundTripMs: Infinity };
    for (let i = 0; i < rounds; i++) {
      const sent = nowMs();
      this.send({ type: 'ping', id: i });
      const pong = await this.next<Message & { id: number; now: number }>('pong', 5_000, (message) => message.id === i);
      const received = nowMs();
      const roundTripMs = received - sent;
      if (roundTripMs < best.roundTripMs) best = { offsetMs: (sent + received) / 2 - pong.now, roundTripMs };
    }
    this.offsetMs = best.offsetMs;
    return best;
  }

  close(): void {
    this.#socket.destroy();
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}

/** Listens on `socketPath` and hands out each agent process's channel once it has said hello. */
export class AgentHub {
  readonly socketPath: string;
  readonly #server: net.Server;
  readonly #peers = new Map<number, AgentPeer>();
  readonly #waiters = new Set<() => void>();

  private constructor(socketPath: string, server: net.Server) {
    this.socketPath = socketPath;
    this.#server = server;
    server.on('connection', (socket) => {
      const lines = createInterface({ input: socket });
      lines.once('line', (line) => {
        let hello: { type?: string; index?: number };
        try {
          hello = JSON.parse(line) as { type?: string; index?: number };
        } catch {
          socket.destroy();
          return;
        }
        if (hello.type !== 'hello' || typeof hello.index !== 'number') {
          socket.destroy();
          return;
        }
        this.#peers.set(hello.index, new AgentPeer(hello.index, socket, lines));
        for (const waiter of [...this.#waiters]) waiter();
      });
    });
  }

  static async listen(socketPath: string): Promise<AgentHub> {
    rmSync(socketPath, { force: true });
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    return new AgentHub(socketPath, server);
  }

  peer(index: number, timeoutMs: number): Promise<AgentPeer> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const peer = this.#peers.get(index);
        if (!peer) return false;
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        resolve(peer);
        return true;
      };
      const waiter = (): void => void check();
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`agent process ${index} did not connect to ${this.socketPath} within ${timeoutMs} ms`));
      }, timeoutMs);
      if (!check()) this.#waiters.add(waiter);
    });
  }

  close(): void {
    for (const peer of this.#peers.values()) peer.close();
    this.#server.close();
    rmSync(this.socketPath, { force: true });
  }
}
