// The server's rapid-reset rule: trips only when the streams the peer resets before our
// answer exceed the limit AND are most of the streams it opened in the window.
import t from 'tap';
import { EarlyResetWindow } from '../../src/tunnel/hbone-server.js';

t.test('the rapid-reset pattern trips it just past the limit', async (t) => {
  const w = new EarlyResetWindow(200, 10_000);
  let tripped = -1;
  for (let i = 0; i < 1000 && tripped < 0; i++) {
    w.open(1000);
    if (w.reset(1000)) tripped = i + 1;
  }
  t.equal(tripped, 201);
});

t.test('an honest client that cancels some CONNECTs among many never trips it', async (t) => {
  const w = new EarlyResetWindow(200, 10_000);
  let trips = 0;
  // 3,000 streams in the window, every fourth cancelled before an answer (750 > 200, but 25 %).
  for (let i = 0; i < 3000; i++) {
    w.open(5000);
    if (i % 4 === 0 && w.reset(5000)) trips += 1;
  }
  t.equal(trips, 0);
});

t.test('the window rolls over', async (t) => {
  const w = new EarlyResetWindow(2, 1000);
  for (let i = 0; i < 3; i++) w.open(0);
  t.notOk(w.reset(0));
  t.notOk(w.reset(0));
  t.ok(w.reset(0), 'third reset of three streams in one window');
  w.open(1000);
  t.notOk(w.reset(1000), 'a new window starts from zero');
});
