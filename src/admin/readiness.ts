// Start-up readiness (as upstream ztunnel's readiness, https://github.com/istio/ztunnel/blob/master/src/readiness.rs): named tasks are pending until released; the
// readiness server answers 200 only when none is pending, else 503 naming them (upstream
// answers 500; any status ≥ 400 fails a kubelet probe, and 503 is the honest "not yet").
// A task may become pending again (e.g. draining).
import type http from 'node:http';
import { buildServer, listen, parseTarget, sendText } from './http-server.js';

export class Readiness {
  private readonly pendingTasks = new Set<string>();

  pending(name: string): void {
    this.pendingTasks.add(name);
  }

  ready(name: string): void {
    this.pendingTasks.delete(name);
  }

  isReady(): boolean {
    return this.pendingTasks.size === 0;
  }

  pendingNames(): string[] {
    return [...this.pendingTasks].sort();
  }
}

export function startReadinessServer(o: { host: string; port: number; readiness: Readiness }): Promise<http.Server> {
  const server = buildServer((req, res) => {
    if (parseTarget(req).pathname !== '/healthz/ready') {
      sendText(res, 404, 'not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendText(res, 405, 'method not allowed\n', { allow: 'GET, HEAD' });
      return;
    }
    if (o.readiness.isReady()) sendText(res, 200, 'ready\n');
    else sendText(res, 503, `not ready, pending: ${o.readiness.pendingNames().join(', ')}\n`);
  });
  return listen(server, o.host, o.port);
}
