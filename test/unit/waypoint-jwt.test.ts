/**
 * RequestAuthentication at the waypoint with real tokens signed by jose: where tokens are found (default
 * Authorization Bearer and access_token, fromHeaders with prefix, fromParams, fromCookies), what fails with 401 and
 * Envoy's message (bad signature, expired, wrong audience, unknown issuer, keys not fetched), the header changes of a
 * success, the per-token cache (one signature check for a steady client, dropped when the keys change), and a JWKS
 * URI fetched, refreshed and served stale on failure. Validation of the RequestAuthentication object.
 */
import test from 'ava';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import type { JwtRule, L7RequestAuthentication } from '../../shared/policy/l7-model.ts';
import { compileRequestAuthentication, validateRequestAuthentication } from '../../shared/policy/request-authentication.ts';
import { JwksSource } from '../../waypoint/jwt/jwks-source.ts';
import { RequestAuthenticator } from '../../waypoint/jwt/request-authenticator.ts';

const ISSUER = 'https://issuer.example';

async function keyPair(kid: string): Promise<{ privateKey: CryptoKey; jwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  return { privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' } };
}

async function token(privateKey: CryptoKey, kid: string, claims: Record<string, unknown> = {}, options: { issuer?: string; expiresIn?: string; audience?: string } = {}): Promise<string> {
  const jwt = new SignJWT({ groups: ['admin'], ...claims }).setProtectedHeader({ alg: 'ES256', kid }).setIssuer(options.issuer ?? ISSUER).setSubject('alice').setIssuedAt();
  if (options.audience) jwt.setAudience(options.audience);
  jwt.setExpirationTime(options.expiresIn ?? '1h');
  return jwt.sign(privateKey);
}

function rule(overrides: Partial<JwtRule>): JwtRule {
  return { issuer: ISSUER, audiences: [], jwksUri: '', jwks: '', fromHeaders: [], fromParams: [], fromCookies: [], forwardOriginalToken: false, outputPayloadToHeader: '', outputClaimToHeaders: [], ...overrides };
}

function authenticatorFor(rules: JwtRule[], fetchText: (uri: string) => Promise<string> = () => Promise.reject(new Error('no network')), now?: () => number) {
  const authenticator = new RequestAuthenticator({ fetchText, ...(now ? { now } : {}) });
  const policy: L7RequestAuthentication = { name: 'jwt', namespace: 'shop', targets: [{ kind: 'Service', namespace: 'shop', name: 'web' }], jwtRules: rules };
  authenticator.update([policy]);
  return { authenticator, service: authenticator.forService([policy]) };
}

test('a valid Bearer token is verified once, then served from the cache; its claims become request.auth', async (t) => {
  const key = await keyPair('k1');
  const jwt = await token(key.privateKey, 'k1');
  const { authenticator, service } = authenticatorFor([rule({ jwks: JSON.stringify({ keys: [key.jwk] }) })]);
  const headers: Record<string, string | undefined> = { authorization: `Bearer ${jwt}` };
  const first = await service.authenticate(headers, '/');
  t.is(first.kind, 'verified');
  if (first.kind !== 'verified') return;
  t.is(first.auth.principal, `${ISSUER}/alice`);
  t.deepEqual(first.auth.claims.groups, ['admin']);
  t.is(headers.authorization, undefined, 'the token is removed unless forwardOriginalToken');
  for (let i = 0; i < 5; i++) t.is((await service.authenticate({ authorization: `Bearer ${jwt}` }, '/')).kind, 'verified');
  t.deepEqual(authenticator.stats, { verifications: 1, cacheHits: 5, failures: 0 });
  t.is((await service.authenticate({}, '/')).kind, 'none', 'no token: unauthenticated, not refused');
});

test('401 reasons: bad signature, expired, wrong audience, unknown issuer, garbage', async (t) => {
  const key = await keyPair('k1');
  const other = await keyPair('k1');
  const { service } = authenticatorFor([rule({ jwks: JSON.stringify({ keys: [key.jwk] }), audiences: ['web'] })]);
  const check = async (jwt: string): Promise<string> => {
    const result = await service.authenticate({ authorization: `Bearer ${jwt}` }, '/');
    return result.kind === 'invalid' ? result.message : result.kind;
  };
  t.is(await check(await token(key.privateKey, 'k1', {}, { audience: 'web' })), 'verified');
  t.is(await check(await token(other.privateKey, 'k1', {}, { audience: 'web' })), 'Jwt verification fails', 'signed by another key with the same kid');
  t.is(await check(await token(key.privateKey, 'k1', {}, { audience: 'web', expiresIn: '-5m' })), 'Jwt is expired');
  t.is(await check(await token(key.privateKey, 'k1', {}, { audience: 'other' })), 'Audiences in Jwt are not allowed');
  t.is(await check(await token(key.privateKey, 'k1', {}, { audience: 'web', issuer: 'https://evil.example' })), 'Jwt issuer is not configured');
  t.regex(await check('not.a-token'), /Header\.Payload\.Signature/);
  const tampered = (await token(key.privateKey, 'k1', {}, { audience: 'web' })).replace(/\.[^.]+$/, '.AAAA');
  t.is(await check(tampered), 'Jwt verification fails');
});

test('a refused token is remembered: resending it costs no second signature check', async (t) => {
  const key = await keyPair('k1');
  const other = await keyPair('k1');
  const { authenticator, service } = authenticatorFor([rule({ jwks: JSON.stringify({ keys: [key.jwk] }) })]);
  const forged = await token(other.privateKey, 'k1');
  for (let i = 0; i < 5; i++) t.deepEqual(await service.authenticate({ authorization: `Bearer ${forged}` }, '/'), { kind: 'invalid', message: 'Jwt verification fails' });
  t.is(authenticator.stats.verifications, 1);
  t.is(authenticator.stats.failures, 5);
});

test('a cached token still expires: past exp (and the 60 s skew) it is checked again and refused', async (t) => {
  const key = await keyPair('k1');
  const jwt = await token(key.privateKey, 'k1', {}, { expiresIn: '10m' });
  let now = Date.now();
  const { authenticator, service } = authenticatorFor([rule({ jwks: JSON.stringify({ keys: [key.jwk] }) })], undefined, () => now);
  t.is((await service.authenticate({ authorization: `Bearer ${jwt}` }, '/')).kind, 'verified');
  now += 9 * 60_000;
  t.is((await service.authenticate({ authorization: `Bearer ${jwt}` }, '/')).kind, 'verified');
  t.is(authenticator.stats.cacheHits, 1);
  now += 5 * 60_000;
  t.deepEqual(await service.authenticate({ authorization: `Bearer ${jwt}` }, '/'), { kind: 'invalid', message: 'Jwt is expired' });
});

test('locations: fromHeaders with prefix, fromParams, fromCookies; a token elsewhere is not looked at', async (t) => {
  const key = await keyPair('k1');
  const jwt = await token(key.privateKey, 'k1');
  const jwks = JSON.stringify({ keys: [key.jwk] });
  const { service } = authenticatorFor([rule({ jwks, fromHeaders: [{ name: 'X-Jwt', prefix: 'Token ' }], fromParams: ['jwt'], fromCookies: ['session'] })]);
  t.is((await service.authenticate({ 'x-jwt': `Token ${jwt}` }, '/')).kind, 'verified');
  t.is((await service.authenticate({}, `/path?a=1&jwt=${jwt}`)).kind, 'verified');
  t.is((await service.authenticate({ cookie: `a=b; session=${jwt}` }, '/')).kind, 'verified');
  t.is((await service.authenticate({ authorization: `Bearer ${jwt}` }, '/')).kind, 'none', 'the default location is off once locations are named');
  t.is((await service.authenticate({ 'x-jwt': jwt }, '/')).kind, 'none', 'without the prefix');
});

test('a success: forwardOriginalToken keeps it, outputPayloadToHeader and outputClaimToHeaders set headers', async (t) => {
  const key = await keyPair('k1');
  const jwt = await token(key.privateKey, 'k1', { team: 'blue', nested: { level: 3 } });
  const { service } = authenticatorFor([rule({ jwks: JSON.stringify({ keys: [key.jwk] }), forwardOriginalToken: true, outputPayloadToHeader: 'x-jwt-payload', outputClaimToHeaders: [{ header: 'x-team', claim: 'team' }, { header: 'x-level', claim: 'nested.level' }] })]);
  const headers: Record<string, string | undefined> = { authorization: `Bearer ${jwt}`, 'x-team': 'spoofed' };
  t.is((await service.authenticate(headers, '/')).kind, 'verified');
  t.is(headers.authorization, `Bearer ${jwt}`);
  t.is(headers['x-team'], 'blue', 'the claim replaces what the client sent');
  t.is(headers['x-level'], '3');
  t.is(JSON.parse(Buffer.from(headers['x-jwt-payload']!, 'base64url').toString()).team, 'blue');
});

test('jwksUri: fetched, keys not there yet -> 401; served stale when a refresh fails; new keys drop cached tokens', async (t) => {
  const first = await keyPair('k1');
  const second = await keyPair('k2');
  let serving: string | Error = new Error('connection refused');
  let fetches = 0;
  const fetchText = async (): Promise<string> => {
    fetches++;
    if (serving instanceof Error) throw serving;
    return serving;
  };
  const source = JwksSource.remote('http://jwks.shop/keys', fetchText, { refreshMs: 50 });
  await source.ready();
  t.is(source.getKey, undefined);
  t.truthy(source.lastError);
  source.stop();

  const authenticator = new RequestAuthenticator({ fetchText, refreshMs: 60 });
  const policy: L7RequestAuthentication = { name: 'jwt', namespace: 'shop', targets: [{ kind: 'Service', namespace: 'shop', name: 'web' }], jwtRules: [rule({ jwksUri: 'http://jwks.shop/keys' })] };
  authenticator.update([policy]);
  const service = authenticator.forService([policy]);
  const jwt1 = await token(first.privateKey, 'k1');
  const noKeys = await service.authenticate({ authorization: `Bearer ${jwt1}` }, '/');
  t.deepEqual(noKeys, { kind: 'invalid', message: 'Jwks remote fetch is failed' });
  serving = JSON.stringify({ keys: [first.jwk] });
  const waitFor = async (predicate: () => boolean): Promise<void> => {
    while (!predicate()) await new Promise((resolve) => setTimeout(resolve, 10));
  };
  await waitFor(() => authenticator.view().some((entry) => (entry as { generation: number }).generation === 1));
  t.is((await service.authenticate({ authorization: `Bearer ${jwt1}` }, '/')).kind, 'verified');
  // The server fails: the last keys keep serving (several failed refreshes later).
  serving = new Error('503');
  const failedFrom = fetches;
  await waitFor(() => fetches >= failedFrom + 2);
  t.is((await service.authenticate({ authorization: `Bearer ${await token(first.privateKey, 'k1', { n: 2 })}` }, '/')).kind, 'verified', 'stale keys still verify');
  t.regex(String((authenticator.view()[0] as { lastError: string }).lastError), /503/);
  // Rotation: only k2 now. The cached k1 token is checked again and refused.
  serving = JSON.stringify({ keys: [second.jwk] });
  await waitFor(() => authenticator.view().some((entry) => (entry as { generation: number }).generation === 2));
  t.is((await service.authenticate({ authorization: `Bearer ${jwt1}` }, '/')).kind, 'invalid');
  t.is((await service.authenticate({ authorization: `Bearer ${await token(second.privateKey, 'k2')}` }, '/')).kind, 'verified');
  authenticator.close();
});

test('RequestAuthentication validation: paths of every problem; compile keeps only waypoint targets', (t) => {
  const error = t.throws(() =>
    validateRequestAuthentication({
      apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'bad', namespace: 'shop' },
      spec: { targetRefs: [{ kind: 'Service', name: 'web' }], jwtRules: [{ issuer: 'a', jwksUri: 'ftp://x' }, { issuer: 'a', jwks: '{"keys":[]}', outputClaimToHeaders: [{ header: 'bad header', claim: 'c' }] }, { issuer: 'b' }] },
    }),
  );
  t.regex(error!.message, /spec\.jwtRules\[0\]\.jwksUri: must be an http or https URL/);
  t.regex(error!.message, /spec\.jwtRules\[1\]\.issuer: issuer a appears in more than one rule/);
  t.regex(error!.message, /spec\.jwtRules\[1\]\.jwks: must be a JWKS with a non-empty "keys" list/);
  t.regex(error!.message, /spec\.jwtRules\[1\]\.outputClaimToHeaders\[0\]\.header/);
  t.regex(error!.message, /spec\.jwtRules\[2\]: needs jwksUri or jwks/);
  const typo = t.throws(() => validateRequestAuthentication({ apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'typo' }, spec: { jwtRules: [{ issuer: 'a', jwksUri: 'http://x', fromHeader: [] }] } }));
  t.regex(typo!.message, /spec\.jwtRules\[0\].*fromHeader.*fromHeaders/);
  const selector = compileRequestAuthentication(validateRequestAuthentication({ apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 's', namespace: 'shop' }, spec: { selector: { matchLabels: { app: 'web' } }, jwtRules: [{ issuer: 'a', jwksUri: 'http://x' }] } }));
  t.is(selector.requestAuthentication, undefined);
  t.regex(selector.warnings[0]!, /attach it to a waypoint/);
  const attached = compileRequestAuthentication(validateRequestAuthentication({ apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 's', namespace: 'shop' }, spec: { targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'wp' }], jwtRules: [{ issuer: 'a', jwksUri: 'http://x', fromHeaders: [{ name: 'X-Jwt' }] }] } }));
  t.deepEqual(attached.requestAuthentication?.jwtRules[0]?.fromHeaders, [{ name: 'x-jwt', prefix: '' }]);
});
