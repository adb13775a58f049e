import test from 'ava';
import { formatAuthority, parseAuthority } from '../../shared/hbone/index.ts';

test(':authority parses IPv4 and bracketed IPv6 with a port', (t) => {
  t.deepEqual(parseAuthority('10.0.2.5:80'), { host: '10.0.2.5', port: 80 });
  t.deepEqual(parseAuthority('[fd00::5]:8080'), { host: 'fd00::5', port: 8080 });
  t.deepEqual(parseAuthority('[::ffff:10.0.0.1]:65535'), { host: '::ffff:10.0.0.1', port: 65535 });
  t.is(formatAuthority({ host: 'fd00::5', port: 8080 }), '[fd00::5]:8080');
  t.is(formatAuthority({ host: '10.0.2.5', port: 80 }), '10.0.2.5:80');
});

test('malformed :authority values are rejected with HBONE_BAD_AUTHORITY and the reason', (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [undefined, /missing/],
    ['', /missing/],
    ['10.0.2.5', /port is missing/],
    ['10.0.2.5:', /not a decimal/],
    ['10.0.2.5:0', /not a decimal/],
    ['10.0.2.5:080', /not a decimal/],
    ['10.0.2.5:+80', /not a decimal/],
    ['10.0.2.5:65536', /above 65535/],
    ['10.0.2.5: 80', /not a decimal/],
    ['example.com:80', /host names are not allowed/],
    ['10.0.2:80', /not an IPv4/],
    ['fd00::5:80', /brackets/],
    ['[fd00::5]', /port is missing/],
    ['[fd00::5:80', /closing bracket/],
    ['[fe80::1%eth0]:80', /not an IPv6/],
    ['[10.0.0.1]:80', /not an IPv6/],
  ];
  for (const [input, reason] of cases) {
    const error = t.throws(() => parseAuthority(input), { message: reason }, String(input));
    t.is((error as { code?: string }).code, 'HBONE_BAD_AUTHORITY');
    t.is((error as { responseFlags?: string }).responseFlags, 'DPE');
  }
  t.throws(() => formatAuthority({ host: 'example.com', port: 80 }), { message: /host names/ });
});
