#!/usr/bin/python3
"""An independent HBONE client for the agent's inbound tests: mutual TLS from Python's ssl module, HTTP/2 frames
written by hand (so it can do what a well-behaved library refuses to: flood, exceed limits, vanish), responses
decoded with python3-h2's hpack. Never imported by production code.

Usage: hbone_raw_client.py HOST PORT CERT KEY CA MODE [ARGS...]
  handshake                 TLS + HTTP/2 preface, print "ready", then answer PINGs until killed
  handshakes N              N handshakes one after another; print {"failed": how many the server refused}
  hold AUTHORITY            CONNECT, print "open" once answered 200, send "hello", answer PINGs until killed
  resets N AUTHORITY        N tunnels one after another, each answered 200, sent "hello" and reset (CANCEL), as an
                            application aborting its connections; print "reset", then answer PINGs until killed
  request METHOD AUTHORITY  one request; print {"status": N} (or {"reset": code} / {"goaway": code})
  flood N AUTHORITY [BATCH] N CONNECTs, each reset (CANCEL) right after its HEADERS, BATCH (default all N) per write,
                            each batch followed by a PING whose ACK says the server read it; print what came back
  streams N AUTHORITY       N CONNECTs left open, written at once; print what came back, then answer PINGs
  garbage KIND              after the handshake, one malformed frame (KIND: 'settings' a SETTINGS frame of 7 bytes,
                            'window' a WINDOW_UPDATE of 3 bytes, 'noise' 4 KiB of random bytes); print what came back
  hpackbomb AUTHORITY       a CONNECT whose header block puts one 4,000-byte header in the HPACK dynamic table and
                            then references it 1,000 times (4 MB decoded from 5 KB); print what came back
Every mode prints one JSON line (handshake/hold print theirs before waiting).
"""
import json
import socket
import ssl
import struct
import sys
import time

import hpack

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
CANCEL = 0x8
PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'


def frame(kind, flags, stream, payload=b''):
    return struct.pack('>I', len(payload))[1:] + bytes([kind, flags]) + struct.pack('>I', stream) + payload


def literal(index, value):
    """HPACK literal header field without indexing, name from the static table."""
    data = value.encode()
    assert index < 15 and len(data) < 127
    return bytes([index, len(data)]) + data


def request_block(method, authority):
    if method == 'CONNECT':
        return literal(2, 'CONNECT') + literal(1, authority)
    # :method (literal), :scheme https (indexed 7), :path / (indexed 4), :authority
    return literal(2, method) + bytes([0x87, 0x84]) + literal(1, authority)


class Connection:
    def __init__(self, host, port, cert, key, ca):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(cert, key)
        context.load_verify_locations(ca)
        context.check_hostname = False  # HBONE peers are checked by SPIFFE identity, not host name
        context.set_alpn_protocols(['h2'])
        raw = socket.create_connection((host, int(port)), timeout=30)
        self.tls = context.wrap_socket(raw)
        self.buffer = b''
        self.decoder = hpack.Decoder()
        self.tls.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(WINDOW_UPDATE, 0, 0, struct.pack('>I', 16 * 1024 * 1024)))
        # Wait for the server's SETTINGS and acknowledge them, as any client would before opening streams.
        while True:
            got = self.read_frame()
            if got is None:
                raise ConnectionError('the server closed the connection before its SETTINGS')
            kind, flags, stream, payload = got
            if kind == SETTINGS and not flags & ACK:
                self.tls.sendall(frame(SETTINGS, ACK, 0))
                return

    def read_frame(self):
        """The next frame, answering PINGs on the way; None when the server closed the connection."""
        while True:
            while len(self.buffer) < 9 or len(self.buffer) < 9 + struct.unpack('>I', b'\0' + self.buffer[:3])[0]:
                try:
                    chunk = self.tls.recv(65536)
                except socket.timeout:
                    raise
                except (ssl.SSLError, ConnectionError):
                    # A close without TLS close_notify, or a reset: the server closed the connection all the same.
                    chunk = b''
                if not chunk:
                    return None
                self.buffer += chunk
            length = struct.unpack('>I', b'\0' + self.buffer[:3])[0]
            kind, flags = self.buffer[3], self.buffer[4]
            stream = struct.unpack('>I', self.buffer[5:9])[0] & 0x7fffffff
            payload = self.buffer[9:9 + length]
            self.buffer = self.buffer[9 + length:]
            if kind == PING and not flags & ACK:
                self.tls.sendall(frame(PING, ACK, 0, payload))
                continue
            return kind, flags, stream, payload

    def send(self, data):
        """Writes data; False when the server had already closed the connection (a close without TLS close_notify
        or a reset arriving while we write, as when the server closes with the rest of a flood unread)."""
        try:
            self.tls.sendall(data)
            return True
        except socket.timeout:
            raise
        except (ssl.SSLError, ConnectionError):
            return False

    def status_of(self, payload, flags):
        if flags & 0x8:  # PADDED
            payload = payload[1:len(payload) - payload[0]]
        if flags & 0x20:  # PRIORITY
            payload = payload[5:]
        headers = dict(self.decoder.decode(payload))
        return int(headers.get(':status', headers.get(b':status', 0)))


def out(result):
    print(json.dumps(result), flush=True)


def serve_pings(conn):
    while conn.read_frame() is not None:
        pass


def main():
    host, port, cert, key, ca, mode = sys.argv[1:7]
    args = sys.argv[7:]
    if mode == 'handshakes':
        failed = 0
        for _ in range(int(args[0])):
            try:
                Connection(host, port, cert, key, ca).tls.close()
            except Exception:  # the server refused us: a TLS alert, a reset, or a close before its SETTINGS
                failed += 1
        out({'failed': failed})
        return
    conn = Connection(host, port, cert, key, ca)
    if mode == 'handshake':
        out('ready')
        serve_pings(conn)
        return
    if mode == 'hold':
        conn.tls.sendall(frame(HEADERS, END_HEADERS, 1, request_block('CONNECT', args[0])))
        while True:
            got = conn.read_frame()
            if got is None:
                out({'closed': True})
                return
            kind, flags, stream, payload = got
            if kind == HEADERS and stream == 1:
                status = conn.status_of(payload, flags)
                if status != 200:
                    out({'status': status})
                    return
                conn.tls.sendall(frame(DATA, 0, 1, b'hello'))
                out('open')
                serve_pings(conn)
                return
    if mode == 'resets':
        count, authority = int(args[0]), args[1]
        for i in range(count):
            stream = 2 * i + 1
            conn.tls.sendall(frame(HEADERS, END_HEADERS, stream, request_block('CONNECT', authority)))
            while True:
                got = conn.read_frame()
                if got is None:
                    out({'closed': True, 'reset': i})
                    return
                kind, flags, got_stream, payload = got
                if kind == HEADERS and got_stream == stream:
                    break
            conn.tls.sendall(frame(DATA, 0, stream, b'hello') + frame(RST_STREAM, 0, stream, struct.pack('>I', CANCEL)))
        out('reset')
        serve_pings(conn)
        return
    if mode == 'request':
        method, authority = args
        conn.tls.sendall(frame(HEADERS, END_HEADERS, 1, request_block(method, authority)))
        while True:
            got = conn.read_frame()
            if got is None:
                out({'closed': True})
                return
            kind, flags, stream, payload = got
            if kind == HEADERS and stream == 1:
                out({'status': conn.status_of(payload, flags)})
                return
            if kind == RST_STREAM and stream == 1:
                out({'reset': struct.unpack('>I', payload)[0]})
                return
            if kind == GOAWAY:
                out({'goaway': struct.unpack('>I', payload[4:8])[0]})
                return
    if mode == 'flood':
        count, authority = int(args[0]), args[1]
        batch = int(args[2]) if len(args) > 2 else count
        block = request_block('CONNECT', authority)
        result = {'sent': 0, 'resets': {}, 'goaway': None, 'closed': False}
        started = time.monotonic()
        conn.tls.settimeout(15)
        stream = 1
        try:
            while result['sent'] < count and not result['closed'] and result['goaway'] is None:
                data = bytearray()
                for _ in range(min(batch, count - result['sent'])):
                    data += frame(HEADERS, END_HEADERS, stream, block)
                    data += frame(RST_STREAM, 0, stream, struct.pack('>I', CANCEL))
                    stream += 2
                    result['sent'] += 1
                # Frames are handled in order: the PING's ACK says the server has read the whole batch.
                data += frame(PING, 0, 0, b'batchend')
                if not conn.send(bytes(data)):
                    result['closed'] = True
                    break
                while True:
                    got = conn.read_frame()
                    if got is None:
                        result['closed'] = True
                        break
                    kind, flags, _, payload = got
                    if kind == RST_STREAM:
                        code = str(struct.unpack('>I', payload)[0])
                        result['resets'][code] = result['resets'].get(code, 0) + 1
                    elif kind == GOAWAY:
                        result['goaway'] = struct.unpack('>I', payload[4:8])[0]
                        result['lastStreamId'] = struct.unpack('>I', payload[:4])[0] & 0x7fffffff
                    elif kind == PING and flags & ACK:
                        break
            # After a GOAWAY the server closes: wait for it.
            while not result['closed']:
                if conn.read_frame() is None:
                    result['closed'] = True
        except (socket.timeout, OSError) as error:
            result['error'] = str(error)
        result['seconds'] = round(time.monotonic() - started, 3)
        out(result)
        return
    if mode == 'streams':
        count, authority = int(args[0]), args[1]
        block = request_block('CONNECT', authority)
        data = bytearray()
        for i in range(count):
            data += frame(HEADERS, END_HEADERS, 2 * i + 1, block)
        result = {'answered': 0, 'ok': 0, 'resets': {}, 'goaway': None, 'closed': False}
        if not conn.send(bytes(data)):
            result['closed'] = True
            out(result)
            return
        conn.tls.settimeout(15)
        try:
            while result['answered'] < count:
                got = conn.read_frame()
                if got is None:
                    result['closed'] = True
                    break
                kind, flags, stream, payload = got
                if kind == HEADERS:
                    result['answered'] += 1
                    if conn.status_of(payload, flags) == 200:
                        result['ok'] += 1
                elif kind == RST_STREAM:
                    # A stream refused (REFUSED_STREAM past the limit) is answered too.
                    result['answered'] += 1
                    code = str(struct.unpack('>I', payload)[0])
                    result['resets'][code] = result['resets'].get(code, 0) + 1
                elif kind == GOAWAY:
                    result['goaway'] = struct.unpack('>I', payload[4:8])[0]
                    result['lastStreamId'] = struct.unpack('>I', payload[:4])[0] & 0x7fffffff
        except (socket.timeout, OSError) as error:
            result['error'] = str(error)
        out(result)
        serve_pings(conn)
        return
    if mode in ('garbage', 'hpackbomb'):
        if mode == 'garbage':
            kind = args[0]
            if kind == 'settings':
                data = frame(SETTINGS, 0, 0, b'\0' * 7)
            elif kind == 'window':
                data = frame(WINDOW_UPDATE, 0, 0, b'\0' * 3)
            else:
                import os
                data = os.urandom(4096)
        else:
            # Literal with incremental indexing, new name (0x40): "x-bomb" = 4,000 bytes, then 1,000 references to
            # dynamic table entry 62 (0xbe) after the request's own pseudo-headers.
            bomb = bytes([0x40, 6]) + b'x-bomb' + bytes([0x7f]) + encode_length(4000 - 127) + b'b' * 4000
            block = request_block('CONNECT', args[0]) + bomb + bytes([0xbe]) * 1000
            data = frame(HEADERS, END_HEADERS, 1, block)
        result = {'status': None, 'resets': {}, 'goaway': None, 'closed': False}
        if not conn.send(data):
            result['closed'] = True
            out(result)
            return
        conn.tls.settimeout(15)
        try:
            while True:
                got = conn.read_frame()
                if got is None:
                    result['closed'] = True
                    break
                kind, flags, stream, payload = got
                if kind == HEADERS:
                    try:
                        result['status'] = conn.status_of(payload, flags)
                    except Exception:  # the bomb's own table is not the server's: a status may not decode
                        result['status'] = -1
                elif kind == RST_STREAM:
                    code = str(struct.unpack('>I', payload)[0])
                    result['resets'][code] = result['resets'].get(code, 0) + 1
                    break
                elif kind == GOAWAY:
                    result['goaway'] = struct.unpack('>I', payload[4:8])[0]
        except (socket.timeout, OSError) as error:
            result['error'] = str(error)
        out(result)
        return
    raise SystemExit(f'unknown mode {mode}')


def encode_length(rest):
    """HPACK integer continuation bytes for a value past a 7-bit prefix's 127."""
    data = bytearray()
    while rest >= 128:
        data.append((rest % 128) + 128)
        rest //= 128
    data.append(rest)
    return bytes(data)


if __name__ == '__main__':
    main()
