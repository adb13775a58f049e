#!/usr/bin/python3
"""An independent HBONE client written with python3-h2 (Debian), for interop tests of ambit's HBONE server.

Usage: h2_client.py HOST PORT CERT KEY CA AUTHORITY PAYLOAD_FILE
Opens mutual TLS 1.3 with ALPN h2, sends CONNECT :authority AUTHORITY, sends the payload with END_STREAM, and
reads the response until the server's END_STREAM. Prints one JSON line: status, the bytes received (hex),
whether END_STREAM arrived, and any reset code.
"""
import json
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events


def main() -> None:
    host, port, cert, key, ca, authority, payload_file = sys.argv[1:8]
    with open(payload_file, 'rb') as f:
        payload = f.read()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca)
    context.check_hostname = False  # HBONE peers are checked by SPIFFE identity, not host name
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(['h2'])

    raw = socket.create_connection((host, int(port)), timeout=20)
    tls = context.wrap_socket(raw)
    if tls.selected_alpn_protocol() != 'h2':
        raise SystemExit(f'server did not select h2: {tls.selected_alpn_protocol()}')
    peer = tls.getpeercert()
    uris = [value for kind, value in peer.get('subjectAltName', ()) if kind == 'URI']

    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
    conn.initiate_connection()
    conn.increment_flow_control_window(16 * 1024 * 1024)
    tls.sendall(conn.data_to_send())

    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, [(':method', 'CONNECT'), (':authority', authority)])
    tls.sendall(conn.data_to_send())

    status = None
    received = bytearray()
    ended = False
    reset = None
    pending = None  # payload not yet sent; None until the 200 arrives

    def pump() -> None:
        nonlocal pending
        while pending:
            room = min(len(pending), conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if room <= 0:
                return
            conn.send_data(stream_id, pending[:room])
            pending = pending[room:]
        if pending is not None and not pending:
            conn.end_stream(stream_id)
            pending = None
    while not ended and reset is None:
        data = tls.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b':status'])
                if status == 200:
                    pending = payload
            elif isinstance(event, h2.events.DataReceived):
                received.extend(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended = True
            elif isinstance(event, h2.events.StreamReset):
                reset = event.error_code
        pump()
        tls.sendall(conn.data_to_send())
    conn.close_connection()
    try:
        tls.sendall(conn.data_to_send())
    except OSError:
        pass
    tls.close()
    print(json.dumps({'status': status, 'data': received.hex(), 'ended': ended, 'reset': reset, 'peer': uris}))


if __name__ == '__main__':
    main()
