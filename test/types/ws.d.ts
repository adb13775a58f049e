/**
 * The part of the `ws` package (8.x) the WebSocket tests use, typed here because @types/ws is not installed.
 * Owns: nothing beyond these declarations.
 */
declare module 'ws' {
  import type { EventEmitter } from 'node:events';
  import type http from 'node:http';

  class WebSocket extends EventEmitter {
    constructor(address: string);
    send(data: string | Buffer, options?: { binary?: boolean }): void;
    close(code?: number, reason?: string): void;
    on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): this;
    on(event: 'close', listener: (code: number, reason: Buffer) => void): this;
    on(event: 'error', listener: (error: Error) => void): this;
    on(event: 'open', listener: () => void): this;
  }

  export class WebSocketServer extends EventEmitter {
    constructor(options: { server: http.Server });
    on(event: 'connection', listener: (socket: WebSocket, request: http.IncomingMessage) => void): this;
  }

  export default WebSocket;
}
