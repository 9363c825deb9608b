// The capture listeners' accept queue (src/capture/listeners.ts), on loopback without
// privileges: the backlog the kernel reports for the listening socket (`ss -l`, Send-Q)
// must be CAPTURE_BACKLOG (capped by net.core.somaxconn), not Node's 511, which Node
// would otherwise re-apply when it adopts the listener fd.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import t from 'tap';
import { CAPTURE_BACKLOG, listenCapture } from '../../src/capture/listeners.js';

function kernelBacklog(port: number): number | undefined {
  const out = execFileSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' });
  const cols = out.trim().split(/\s+/);
  return cols.length >= 3 ? Number(cols[2]) : undefined;
}

let hasSs = true;
try {
  execFileSync('ss', ['-V'], { stdio: 'ignore' });
} catch {
  hasSs = false;
}

if (!hasSs) {
  t.plan(0, 'ss (iproute2) is not installed');
} else {
  const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim());

  t.test('a capture listener keeps its large accept queue after Node adopts the fd', async (t) => {
    const l = await listenCapture({ host: '127.0.0.1', port: 0, transparent: false, onConnection: (s) => s.destroy() });
    t.teardown(() => void l.server.close());
    t.equal(kernelBacklog(l.port), Math.min(CAPTURE_BACKLOG, somaxconn), `backlog ${CAPTURE_BACKLOG} (somaxconn ${somaxconn})`);
    t.ok(CAPTURE_BACKLOG > 511, "larger than Node's default");
  });

  t.test('an explicit backlog is applied as given', async (t) => {
    const l = await listenCapture({ host: '127.0.0.1', port: 0, transparent: false, backlog: 77, onConnection: (s) => s.destroy() });
    t.teardown(() => void l.server.close());
    t.equal(kernelBacklog(l.port), 77);
  });
}
