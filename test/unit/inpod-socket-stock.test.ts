// Unit test: a pod's socket stock (agent/inpod/socket-stock.ts) made through a held namespace descriptor (here the
// test process's own namespace): no spare for a connection now and then, a take that is a pop while there are
// spares, the refill after the turn whose level grows while the stock runs empty, spares given back by the idle sweep
// and by close() (a refill queued before it makes none), and every socket the stock hands out carries its kind's
// options (mark, IP_TRANSPARENT) and no address (bound per connection by the caller).
import test from 'ava';
import { readdirSync, readlinkSync } from 'node:fs';
import { nativeSockets } from '../../agent/inpod/sockets.ts';
import { SocketStock, STOCK_MAX, socketStockStats } from '../../agent/inpod/socket-stock.ts';

function socketDescriptors(): number {
  let count = 0;
  for (const entry of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${entry}`).startsWith('socket:')) count++;
    } catch {
      // the readdir's own descriptor, closed meanwhile
    }
  }
  return count;
}

/** The loop's next check phase: where the stock's refill after a turn runs. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

test.serial('taking is a pop, the stock is topped up after the turn, the sweep and close() give its spares back', async (t) => {
  const netnsFd = nativeSockets.openNetns('/proc/self/ns/net');
  t.teardown(() => nativeSockets.closeFd(netnsFd));
  const before = socketDescriptors();
  const stock = new SocketStock(netnsFd, 0x539);
  const taken: number[] = [];
  taken.push(stock.take(4, true, true));
  await nextTurn();
  t.is(stock.spares, 0, 'a connection now and then makes its own socket and leaves no spare');
  taken.push(stock.take(4, true, true));
  t.is(stock.spares, 0, 'empty again within the window: the take still makes only its own socket');
  t.is(socketDescriptors() - before, 2);
  await nextTurn();
  t.is(stock.spares, 2, 'the refill after the turn made the spares');
  // A take from the spares makes nothing: the descriptor moves from the stock to the caller.
  const held = socketDescriptors();
  taken.push(stock.take(4, true, true));
  t.is(socketDescriptors(), held, 'a take from the stock is a pop');
  t.is(stock.spares, 1);
  // A storm: five takes per turn. The level doubles each time a take finds the kind empty, up to STOCK_MAX.
  for (let turn = 0; turn < 12; turn++) {
    for (let index = 0; index < 5; index++) taken.push(stock.take(4, true, true));
    await nextTurn();
  }
  t.true(stock.spares > 5 && stock.spares <= STOCK_MAX, `spares ${stock.spares}`);
  for (const fd of taken) {
    t.is(nativeSockets.getMark(fd), 0x539, 'the mark is on every socket');
  }
  for (const fd of taken) nativeSockets.closeFd(fd);
  t.is(socketDescriptors() - before, stock.spares, 'only the spares are left open');
  t.is(socketStockStats().spares, stock.spares, 'the thread\'s count (admin /memory) says so too');
  t.true(stock.sweep(), 'taken from since the last sweep: the spares stay');
  t.false(stock.sweep(), 'not taken from over a whole sweep period: the spares are closed');
  t.is(stock.spares, 0);
  t.is(socketDescriptors(), before);
  // After the sweep the level is back at 0: a connection now and then holds no spare again.
  nativeSockets.closeFd(stock.take(4, true, true));
  await nextTurn();
  t.is(stock.spares, 0);
  for (let index = 0; index < 8; index++) {
    nativeSockets.closeFd(stock.take(6, false, false));
    await nextTurn();
  }
  t.true(stock.spares > 0);
  stock.close();
  t.is(stock.spares, 0);
  t.is(socketDescriptors(), before, 'close() closed every spare');
  t.is(socketStockStats().spares, 0);
  t.throws(() => stock.take(4, false, false), { message: /closed/ });
});

test.serial('a refill queued before close() makes nothing', async (t) => {
  const netnsFd = nativeSockets.openNetns('/proc/self/ns/net');
  t.teardown(() => nativeSockets.closeFd(netnsFd));
  const before = socketDescriptors();
  const stock = new SocketStock(netnsFd, undefined);
  nativeSockets.closeFd(stock.take(4, false, false));
  nativeSockets.closeFd(stock.take(4, false, false));
  // The second empty take queued a refill for after this turn; the pod is released first.
  stock.close();
  await nextTurn();
  await nextTurn();
  t.is(stock.spares, 0);
  t.is(socketStockStats().spares, 0);
  t.is(socketDescriptors(), before, 'no spare made for a released pod');
});

test.serial('a burst larger than the stock inside one turn takes half the level in one visit, not one socket per take', async (t) => {
  const netnsFd = nativeSockets.openNetns('/proc/self/ns/net');
  t.teardown(() => nativeSockets.closeFd(netnsFd));
  const stock = new SocketStock(netnsFd, undefined);
  t.teardown(() => stock.close());
  const taken: number[] = [];
  t.teardown(() => {
    for (const fd of taken) nativeSockets.closeFd(fd);
  });
  // Demand: a few turns with takes, so the kind has a level and spares.
  for (let turn = 0; turn < 6; turn++) {
    for (let index = 0; index < 4; index++) taken.push(stock.take(4, false, false));
    await nextTurn();
  }
  const spares = stock.spares;
  t.true(spares >= 4, `spares ${spares}`);
  // One turn takes them all and one more: the take that finds the kind empty makes its socket and spares with it.
  for (let index = 0; index < spares; index++) taken.push(stock.take(4, false, false));
  t.is(stock.spares, 0);
  taken.push(stock.take(4, false, false));
  t.true(stock.spares > 0, 'the empty take left spares for the rest of the burst');
  const left = stock.spares;
  taken.push(stock.take(4, false, false));
  t.is(stock.spares, left - 1, 'the next take of the burst is a pop');
});

test.serial('kinds are kept apart: family and IP_TRANSPARENT as asked, never an address before the caller binds one', async (t) => {
  const netnsFd = nativeSockets.openNetns('/proc/self/ns/net');
  t.teardown(() => nativeSockets.closeFd(netnsFd));
  const stock = new SocketStock(netnsFd, undefined);
  t.teardown(() => stock.close());
  for (let round = 0; round < 6; round++) {
    const plain = stock.take(4, false, false);
    const transparent = stock.take(6, true, true);
    t.is(nativeSockets.getMark(plain), 0, 'no mark asked, none set');
    // A transparent socket may be bound to an address that is not local; a plain one may not.
    t.notThrows(() => nativeSockets.bindTcp(transparent, 'fd99::7', 0));
    t.throws(() => nativeSockets.bindTcp(plain, '10.99.0.7', 0), { code: 'EADDRNOTAVAIL' });
    nativeSockets.closeFd(plain);
    nativeSockets.closeFd(transparent);
    // Later rounds take spares the refill made after this turn.
    await nextTurn();
  }
  t.true(stock.spares > 0, 'the later rounds were served from the stock');
});
