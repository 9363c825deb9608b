// Every live proxied connection, so that (1) authorized inbound connections are
// re-evaluated whenever the policies change and closed when now denied (always, not only
// for some config sources as upstream), and (2) drain can force-close what is left at
// the termination deadline. Also what /config_dump shows under `connections`.
import type { Workload } from '../config/types.js';
import type { AuthzConnection, AuthzDecision, PolicyStore } from '../authorize/index.js';

export interface TrackedConnection {
  direction: 'inbound' | 'outbound';
  src: string;
  originalDst: string;
  actualDst: string;
  protocol: 'HBONE' | 'TCP';
  /** The local workloads this connection belongs to (inbound: the destination; outbound: the source; same-node: both). */
  workloadUids: readonly string[];
  /** Inbound only: what authorization is re-run on. */
  authz: { workload: Workload; conn: AuthzConnection } | undefined;
  /** Abort the connection (reset both sides) with this error. */
  abort(err: Error): void;
}

export class ConnectionTracker {
  private readonly live = new Set<TrackedConnection>();

  add(c: TrackedConnection): () => void {
    this.live.add(c);
    return () => {
      this.live.delete(c);
    };
  }

  get size(): number {
    return this.live.size;
  }

  /**
   * Re-run authorization for every inbound connection; abort the denied ones.
   * Returns the connections closed with their decisions (for the log line).
   */
  reauthorize(
    policies: PolicyStore,
    makeError: (d: Extract<AuthzDecision, { kind: 'deny' }>) => Error,
    currentWorkload: (uid: string) => Workload | undefined = () => undefined,
  ): number {
    let closed = 0;
    for (const c of [...this.live]) {
      if (!c.authz) continue;
      // Evaluate against the workload as it is now: its authorizationPolicies may have changed too.
      const workload = currentWorkload(c.authz.workload.uid) ?? c.authz.workload;
      const d = policies.authorize(workload, c.authz.conn);
      if (d.kind === 'deny') {
        closed += 1;
        c.abort(makeError(d));
      }
    }
    return closed;
  }

  /** Abort every connection whose local workload is no longer served (removed from the config or moved away). */
  closeRemovedWorkloads(stillLocal: (uid: string) => boolean, makeError: () => Error): number {
    let closed = 0;
    for (const c of [...this.live]) {
      if (c.workloadUids.every(stillLocal)) continue;
      closed += 1;
      c.abort(makeError());
    }
    return closed;
  }

  abortAll(err: Error): void {
    for (const c of [...this.live]) c.abort(err);
  }

  dump(): { inbound: object[]; outbound: object[] } {
    const inbound: object[] = [];
    const outbound: object[] = [];
    for (const c of this.live) {
      const row = { src: c.src, originalDst: c.originalDst, actualDst: c.actualDst, protocol: c.protocol, workloads: c.workloadUids };
      (c.direction === 'inbound' ? inbound : outbound).push(row);
    }
    return { inbound, outbound };
  }
}
