// Shared opening of the root end-to-end suites: skip with the reason when namespaces,
// tools or the build are missing, else a MeshHarness with a per-process unique prefix.
import { MeshHarness, type MeshHarnessOptions } from '../../src/demo/mesh-harness.js';
import { findNetnsSkipReason } from './netns.js';
import { noteLogLine } from './unexpected.js';

const TOOLS = ['ip', 'ipset', 'iptables-nft-restore', 'sysctl', 'curl'];

/** The harness (not started), or undefined after planning the suite as skipped. */
export function prepareMeshSuite(
  t: { plan(n: number, reason?: string): void },
  prefixStem: string,
  options: Omit<MeshHarnessOptions, 'prefix'> = {},
): MeshHarness | undefined {
  const reason = findNetnsSkipReason(TOOLS);
  if (reason !== undefined) {
    t.plan(0, reason);
    return undefined;
  }
  const mesh = new MeshHarness({
    ...options,
    prefix: `${prefixStem}${process.pid % 10000}`,
    onZtunnelLine: (node, line) => {
      noteLogLine(`ztunnel ${node}`, line);
      options.onZtunnelLine?.(node, line);
    },
  });
  const missing = mesh.findMissingBuild();
  if (missing.length > 0) {
    t.plan(0, `not built (${missing.join(', ')}); run npm run build`);
    return undefined;
  }
  return mesh;
}
