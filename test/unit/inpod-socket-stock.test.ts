// Unit test: a pod's socket stock (agent/inpod/socket-stock.ts) made through a held namespace descriptor (here the
// test process's own namespace): no spare for a connection now and then, a batch that grows while the stock runs
// empty, spares given back by the idle sweep and by close(), and every socket the stock hands out carries its kind's
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

test.serial('the stock grows while it runs empty, the sweep and close() give its spares back', (t) => {
  const netnsFd = nativeSockets.openNetns('/proc/self/ns/net');
  t.teardown(() => nativeSockets.closeFd(netnsFd));
  const before = socketDescriptors();
  const stock = new SocketStock(netnsFd, 0x539);
  const taken: number[] = [];
  taken.push(stock.take(4, true, true));
  t.is(stock.spares, 0, 'the first socket is made alone: no spare');
  // Asked for again at once: each fill is twice the last, up to STOCK_MAX.
  for (let index = 0; index < 40; index++) taken.push(stock.take(4, true, true));
  t.true(stock.spares > 0 && stock.spares < STOCK_MAX, `spares ${stock.spares}`);
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
  // After the sweep the batch starts again at one.
  const again = stock.take(4, true, true);
  t.is(stock.spares, 0);
  nativeSockets.closeFd(again);
  for (let index = 0; index < 8; index++) nativeSockets.closeFd(stock.take(6, false, false));
  t.true(stock.spares > 0);
  stock.close();
  t.is(stock.spares, 0);
  t.is(socketDescriptors(), before, 'close() closed every spare');
  t.is(socketStockStats().spares, 0);
  t.throws(() => stock.take(4, false, false), { message: /closed/ });
});

test.serial('kinds are kept apart: family and IP_TRANSPARENT as asked, never an address before the caller binds one', (t) => {
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
  }
});
