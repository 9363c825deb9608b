// Shared plumbing of the three small HTTP servers (admin 15000, stats 15020, readiness
// 15021): HTTP/1.1, a 2 s header deadline, 8 KiB of headers, listen-then-resolve, and a
// close that also drops idle keep-alive connections.
// Must never let a handler error escape: it becomes a 500 with the error text.
import http from 'node:http';
import net from 'node:net';
import { errorMessage } from '../errors.js';

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void | Promise<void>;

const HEADERS_TIMEOUT_MS = 2000;
const REQUEST_TIMEOUT_MS = 10_000;
const KEEP_ALIVE_TIMEOUT_MS = 5000;
const MAX_HEADER_BYTES = 8 * 1024;
// Node only enforces the header deadline when it sweeps connections; its default sweep
// (30 s) would make the 2 s deadline meaningless.
const CONNECTIONS_CHECK_MS = 1000;

export function buildServer(handler: Handler): http.Server {
  const server = http.createServer(
    {
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
      maxHeaderSize: MAX_HEADER_BYTES,
      connectionsCheckingInterval: CONNECTIONS_CHECK_MS,
    },
    (req, res) => {
      let result: void | Promise<void>;
      try {
        result = handler(req, res);
      } catch (err) {
        sendError(res, err);
        return;
      }
      if (result instanceof Promise) result.catch((err: unknown) => sendError(res, err));
    },
  );
  // A client that misbehaves must not take the process down.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const status =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? '408 Request Timeout'
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? '431 Request Header Fields Too Large'
          : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  });
  return server;
}

function sendError(res: http.ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendText(res, 500, `${errorMessage(err)}\n`);
}

export function sendText(res: http.ServerResponse, status: number, body: string, headers?: http.OutgoingHttpHeaders): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', ...headers });
  res.end(body);
}

/** Resolves once bound (port 0 picks a free port: read server.address()). */
export function listen(server: http.Server, host: string, port: number): Promise<http.Server> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve(server);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen({ host, port });
  });
}

/**
 * Stops accepting, closes idle keep-alive connections now and, after graceMs, any
 * connection still busy. Resolves when the server is fully closed.
 */
export function closeServer(server: http.Server, graceMs = 2000): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      server.closeAllConnections();
      resolve();
      return;
    }
    const force = setTimeout(() => server.closeAllConnections(), graceMs);
    force.unref();
    server.close(() => {
      clearTimeout(force);
      resolve();
    });
    server.closeIdleConnections();
  });
}

/** 127.0.0.0/8, ::1, ::ffff:127.x and the name localhost. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const version = net.isIP(host);
  if (version === 4) return host.startsWith('127.');
  if (version === 6) {
    const lower = host.toLowerCase();
    if (lower === '::1' || lower === '0:0:0:0:0:0:0:1') return true;
    return lower.startsWith('::ffff:127.');
  }
  return false;
}

/** Path and query of a request target, never throwing on odd input. */
export function parseTarget(req: http.IncomingMessage): URL {
  const target = req.url ?? '/';
  try {
    // Concatenated, not resolved: `//x` must stay a path, not become a host.
    return new URL('http://localhost' + (target.startsWith('/') ? target : '/' + target));
  } catch {
    return new URL('http://localhost/');
  }
}
