// The text form of an explanation (what `ztunnel-ts explain` prints): one numbered block
// per hop — where, the deciding object with its packet counter, why — and, at the first
// broken hop, what to run to fix it. The JSON form is the Explanation itself.
// Must never: print a hop after the broken one (explainPath already stops there).

import type { Explanation, Hop } from './hops.js';

const PATHS: Record<Explanation['path'], string> = {
  hbone: 'HBONE to another node',
  'same-node': 'same node (in-process hand-over)',
  passthrough: 'mesh → non-mesh (plain TCP)',
  'plaintext-inbound': 'non-mesh → mesh (plaintext inbound :15006)',
  'not-captured': 'outside the mesh (no ztunnel)',
  refused: 'refused by ztunnel',
};

function formatHop(h: Hop, n: number): string {
  const lines = [`${String(n).padStart(2)}. ${h.ok ? 'ok  ' : 'FAIL'} ${h.step} @ ${h.where}`, `      ${h.object}${h.counter === undefined ? '' : `   [${h.counter.packets} pkts, ${h.counter.bytes} bytes]`}`, `      ${h.why}`];
  if (h.fix !== undefined) lines.push(`      fix: ${h.fix}`);
  return lines.join('\n');
}

export function formatExplanation(e: Explanation): string {
  const head = `${e.src} → ${e.dst}: ${PATHS[e.path]}`;
  const body = e.hops.map((h, i) => formatHop(h, i + 1));
  const tail = e.ok ? 'every hop is in place' : `broken at ${e.brokenAt ?? '?'}: the connection stops there`;
  return [head, ...body, tail].join('\n') + '\n';
}

/** The JSON form (`--json`): the explanation as data, counters included. */
export function formatExplanationJson(e: Explanation): string {
  return JSON.stringify(e, null, 2) + '\n';
}
