// Bench-only preload for the ztunnel processes of the perf bench's P6 memory section:
//   node --expose-gc --import /abs/dist/bench/gc-on-signal.js dist/src/main.js
// SIGUSR2 runs a full garbage collection in the main thread and, over a BroadcastChannel, in
// every worker thread that loaded this preload too, so the bench can read RSS without the
// uncollected garbage of connection setup in it (whose size depends on when V8 last collected).
// Must never: change anything else in the process (without --expose-gc it does nothing; the
// channel is unref'd and the signal listener does not keep the process alive).

import { BroadcastChannel, isMainThread } from 'node:worker_threads';

const gc = (globalThis as { gc?: () => void }).gc;
if (typeof gc === 'function') {
  const channel = new BroadcastChannel('ztunnel-ts-bench-gc');
  channel.unref();
  if (isMainThread) {
    process.on('SIGUSR2', () => {
      gc();
      channel.postMessage('gc');
    });
  } else {
    channel.onmessage = () => gc();
  }
}
