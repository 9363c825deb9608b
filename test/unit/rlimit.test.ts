// The RLIMIT_NOFILE shim: read back against /proc/self/limits, and the raise of the soft
// limit to the hard one after lowering the soft limit of this very process with prlimit(1)
// (lowering needs no privilege; the soft limit is restored afterwards).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import t from 'tap';

import { getFdLimit, raiseFdLimit } from '../../native-shims/index.js';

function readProcLimits(): { soft: number; hard: number } {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  const num = (s: string | undefined): number => (s === 'unlimited' ? Infinity : Number(s));
  return { soft: num(m?.[1]), hard: num(m?.[2]) };
}

t.test('getFdLimit matches /proc/self/limits', async (t) => {
  t.same(getFdLimit(), readProcLimits());
});

t.test('raiseFdLimit lifts a lowered soft limit to the hard limit, and never lowers', async (t) => {
  const start = readProcLimits();
  const hardText = start.hard === Infinity ? 'unlimited' : String(start.hard);
  const low = Math.min(256, start.soft);
  const lowered = spawnSync('prlimit', ['--pid', String(process.pid), `--nofile=${low}:${hardText}`], { encoding: 'utf8' });
  if (lowered.status !== 0) {
    t.comment(`prlimit unavailable: ${lowered.stderr ?? lowered.error?.message}`);
    t.pass('skipped: prlimit unavailable');
    return;
  }
  t.teardown(() => {
    spawnSync('prlimit', ['--pid', String(process.pid), `--nofile=${start.soft === Infinity ? 'unlimited' : start.soft}:${hardText}`]);
  });
  t.equal(readProcLimits().soft, low, 'soft limit lowered for the test');
  const r = raiseFdLimit();
  t.same(r.before, { soft: low, hard: start.hard }, 'before: the lowered soft limit');
  if (start.hard === low) {
    t.equal(r.raised, false, 'nothing to raise');
    return;
  }
  t.equal(r.raised, true, 'raised');
  const now = readProcLimits();
  t.equal(now.hard, start.hard, 'hard limit untouched');
  t.ok(now.soft > low && (now.soft === start.hard || start.hard === Infinity), `soft limit now ${now.soft} (hard ${hardText})`);
  t.same(r.after, now, 'after: what the kernel reports');
  const again = raiseFdLimit();
  t.equal(again.raised, false, 'a second call changes nothing');
});
