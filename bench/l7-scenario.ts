/**
 * The L7 policy benchmark's workload, shared by the in-process micro-bench (bench/suites/l7policy.ts) and the HTTP
 * server it measures CPU on (bench/tools/l7-gate-server.ts): 1,000 AuthorizationPolicies attached to one Service
 * and a RequestAuthentication with an inline ES256 JWKS, written as users write them and compiled by the control
 * plane's code (validate, compileWaypointAuthorization, compileRequestAuthentication), plus a seeded mix of requests
 * from 16 identities, each with a JWT (16 users). The same policies and RequestAuthentication, as manifests for any
 * Service, are what the waypoint suite (bench/suites/waypoint.ts) gives the real waypoint (l7PolicyManifests).
 *
 * Owns: the policy and request mix. Must not know about: timing, processes.
 */
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { AuthorizationPolicyObject, RuleSpec } from '../shared/policy/crd-schema.ts';
import { compileWaypointAuthorization } from '../shared/policy/l7-compile.ts';
import type { L7Authorization, L7RequestAuthentication } from '../shared/policy/l7-model.ts';
import { compileRequestAuthentication, validateRequestAuthentication, type RequestAuthenticationObject } from '../shared/policy/request-authentication.ts';
import { validatePolicy } from '../shared/policy/validate.ts';
import { spiffeId } from '../shared/identity/index.ts';
import type { HboneRequest } from '../shared/hbone/index.ts';

export const L7_ISSUER = 'https://issuer.bench.example';

function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface BenchRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  hbone: HboneRequest;
}

export interface L7Scenario {
  authorizations: { name: string; resource: L7Authorization }[];
  requestAuthentication: L7RequestAuthentication;
  requests: BenchRequest[];
  /** Tokens never seen before (for the uncached verification figure). */
  freshTokens(count: number): Promise<string[]>;
}

const NAMESPACES = 20;
const ACCOUNTS = 10;

/** The Service the policies and the RequestAuthentication target (targetRefs), in its namespace. */
export interface L7PolicyTarget {
  namespace: string;
  service: string;
}
const SHOP: L7PolicyTarget = { namespace: 'shop', service: 'web' };

function makePolicies(count: number, random: () => number, target: L7PolicyTarget): AuthorizationPolicyObject[] {
  const int = (below: number): number => Math.floor(random() * below);
  const policies: AuthorizationPolicyObject[] = [];
  for (let index = 0; index < count; index++) {
    const roll = random();
    let action: 'ALLOW' | 'DENY' = 'ALLOW';
    let rule: RuleSpec;
    if (roll < 0.3) rule = { from: [{ source: { principals: [`cluster.local/ns/ns-${int(NAMESPACES)}/sa/sa-${int(ACCOUNTS)}`] } }], to: [{ operation: { methods: ['GET', 'POST'], paths: [`/api/v${int(50)}/*`] } }] };
    else if (roll < 0.6) rule = { to: [{ operation: { methods: ['GET'], paths: [`/items/${index}`] } }] };
    else if (roll < 0.7) {
      action = 'DENY';
      rule = { to: [{ operation: { paths: [`/admin-${int(100)}*`] } }], when: [{ key: 'request.headers[x-debug]', values: ['on'] }] };
    } else if (roll < 0.85) rule = { from: [{ source: { requestPrincipals: [`${L7_ISSUER}/*`] } }], to: [{ operation: { paths: [`/groups/${int(100)}*`] } }], when: [{ key: 'request.auth.claims[groups]', values: [`group-${int(16)}`] }] };
    else rule = { from: [{ source: { namespaces: [`ns-${int(NAMESPACES)}`] } }], to: [{ operation: { notPaths: ['/internal*'], hosts: ['web.shop.svc.cluster.local'] } }], when: [{ key: 'request.headers[x-tenant]', values: [`t-${int(40)}`] }] };
    policies.push({
      apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: `p-${String(index).padStart(4, '0')}`, namespace: target.namespace },
      spec: { targetRefs: [{ kind: 'Service', group: '', name: target.service }], action, rules: [rule] },
    });
  }
  return policies;
}

export interface L7PolicyManifests {
  authorizationPolicies: AuthorizationPolicyObject[];
  requestAuthentication: RequestAuthenticationObject;
  /** A valid token (issuer L7_ISSUER, audience `web`, subject `user-N`, claim groups [`group-N`]) for user N. */
  sign(user: number, extra?: Record<string, unknown>): Promise<string>;
}

/**
 * The policies and the RequestAuthentication (inline ES256 JWKS) as users write them, targeting one Service. The
 * seeded mix: 30 % ALLOW by principal + method + path, 30 % ALLOW GET /items/N, 10 % DENY /admin-N* with a header,
 * 15 % ALLOW by request principal + path + `groups` claim, 15 % ALLOW by namespace + notPaths + host + header.
 */
export async function l7PolicyManifests(count: number, target: L7PolicyTarget, seed = 11): Promise<L7PolicyManifests> {
  return manifests(count, target, seededRandom(seed));
}

async function manifests(count: number, target: L7PolicyTarget, random: () => number): Promise<L7PolicyManifests> {
  const authorizationPolicies = makePolicies(count, random, target);
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'bench', alg: 'ES256' }] });
  const sign = (user: number, extra: Record<string, unknown> = {}): Promise<string> =>
    new SignJWT({ groups: [`group-${user}`], ...extra }).setProtectedHeader({ alg: 'ES256', kid: 'bench' }).setIssuer(L7_ISSUER).setSubject(`user-${user}`).setAudience('web').setIssuedAt().setExpirationTime('2h').sign(privateKey);
  const requestAuthentication = validateRequestAuthentication({
    apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'jwt', namespace: target.namespace },
    spec: { targetRefs: [{ kind: 'Service', group: '', name: target.service }], jwtRules: [{ issuer: L7_ISSUER, audiences: ['web'], jwks, outputClaimToHeaders: [{ header: 'x-user', claim: 'sub' }] }] },
  });
  return { authorizationPolicies, requestAuthentication, sign };
}

export async function l7Scenario(policyCount: number, seed = 11): Promise<L7Scenario> {
  const random = seededRandom(seed);
  const int = (below: number): number => Math.floor(random() * below);
  const { authorizationPolicies, requestAuthentication: requestAuthenticationObject, sign } = await manifests(policyCount, SHOP, random);
  const authorizations = authorizationPolicies.map((object) => {
    const validated = validatePolicy(object);
    if (!validated.ok || validated.kind !== 'AuthorizationPolicy') throw new Error(`bench policy invalid: ${validated.ok ? validated.kind : validated.error.message}`);
    const compiled = compileWaypointAuthorization(validated.object);
    return { name: `shop/${object.metadata.name}`, resource: compiled.authorization! };
  });
  const requestAuthentication = compileRequestAuthentication(requestAuthenticationObject).requestAuthentication!;
  const tokens = await Promise.all(Array.from({ length: 16 }, (_, user) => sign(user)));
  const requests: BenchRequest[] = [];
  for (let index = 0; index < 256; index++) {
    const namespace = `ns-${int(NAMESPACES)}`;
    const account = `sa-${int(ACCOUNTS)}`;
    const roll = random();
    const url = roll < 0.3 ? `/api/v${int(50)}/orders?page=${int(5)}` : roll < 0.6 ? `/items/${int(policyCount)}` : roll < 0.7 ? `/admin-${int(100)}/x` : roll < 0.85 ? `/groups/${int(100)}/list` : `/public/${int(1000)}`;
    const headers: Record<string, string> = { host: 'web.shop.svc.cluster.local', 'user-agent': 'bench', accept: '*/*', authorization: `Bearer ${tokens[int(16)]!}` };
    if (random() < 0.2) headers['x-debug'] = 'on';
    if (random() < 0.5) headers['x-tenant'] = `t-${int(40)}`;
    requests.push({
      method: random() < 0.8 ? 'GET' : 'POST',
      url,
      headers,
      hbone: { peerIdentity: spiffeId('cluster.local', namespace, account), target: { host: '10.240.0.10', port: 80 }, headers: {}, remoteAddress: `10.1.${int(4)}.${1 + int(250)}` },
    });
  }
  let next = 1000;
  return {
    authorizations,
    requestAuthentication,
    requests,
    freshTokens: (count) => Promise.all(Array.from({ length: count }, () => sign(next++ % 16, { n: next }))),
  };
}
