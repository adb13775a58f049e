/**
 * A STAND-IN for the Kubernetes API server, for tests only: no Kubernetes runs on these machines. It is built to
 * the real protocol, closely enough that the official client (@kubernetes/client-node 2.x) lists and watches
 * against it unmodified:
 *   - HTTPS only (a self-signed certificate made with shared/identity's x509 provider), bearer token auth;
 *   - on 127.0.0.1 by default, or on an address inside another network namespace (`start({ netns, host })`: the
 *     listening socket is opened there by the agent's native socket helper, so processes in that namespace, and
 *     in namespaces routed to it, reach the server while this process keeps serving it);
 *   - optionally under a path prefix (`start({ pathPrefix: '/k8s/clusters/c-1' })`), as an API server reached
 *     through a proxy is (Rancher serves each cluster's API so): `url` ends with it, and requests outside it get 404;
 *   - `PATCH <collection>/<name>` with a JSON merge patch (the agent's pod annotation), and `PATCH .../<name>/status`
 *     (the status subresource: only `status` of the patch is applied, as a real server does);
 *   - `POST <namespaced collection>` creates an object (409 AlreadyExists when it exists); a Service created so gets
 *     a cluster IP from 10.96.0.0/16 unless it names one (the waypoint controller's writes);
 *   - `GET <collection>/<name>` (namespaced: `.../namespaces/<ns>/<resource>/<name>`) reads one object, 404 Status
 *     when absent (the CNI plugin's lookup);
 *   - `GET <collection>` lists with `metadata.resourceVersion` (one global counter, as etcd's revision);
 *   - `GET <collection>?watch=true&resourceVersion=N[&allowWatchBookmarks=true]` streams JSON lines
 *     `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK","object":...}` of every change after N, then live ones;
 *   - a watch from a version older than the compacted history gets an `ERROR` event whose object is
 *     `{"kind":"Status","code":410,"reason":"Expired"}` and the stream ends (the client must relist);
 *   - `POST /apis/authentication.k8s.io/v1/tokenreviews` answers TokenReviews from a token table
 *     (`issueServiceAccountToken` adds a bound service account token to it, as the kubelet's TokenRequest gets one);
 *   - `GET`/`POST`/`PUT /api/v1/namespaces/<ns>/{secrets,configmaps}[/<name>]` keeps Secrets and ConfigMaps (the
 *     CA root store and the root publisher use them).
 * Lists and watches honour `fieldSelector=metadata.name=<n>` and `metadata.namespace=<ns>` (comma-separated).
 * Collections: core v1 namespaces, nodes, pods, services, serviceaccounts, configmaps; apps/v1 deployments;
 * discovery.k8s.io/v1 endpointslices; gateway.networking.k8s.io/v1 gateways, httproutes, grpcroutes; security.istio.io/v1 authorizationpolicies and peerauthentications.
 * Tests drive it directly: `apply`, `get`, `remove`, `compact` (forget history), `bookmark`, `dropWatches`,
 * `holdWatches`/`releaseWatches` (a partition during which changes are missed by watchers), `holdWrites`/`releaseWrites`
 * (writes of Secrets and ConfigMaps wait, to interleave two writers), `fail`/`recover` (an outage: every request answered 503).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { nativeSockets } from '../../agent/inpod/sockets.ts';
import { x509 } from '../../shared/identity/crypto-provider.ts';
import { generateKeyPair, SIGNING_ALGORITHM } from '../../shared/identity/keys.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';

interface Collection {
  kind: string;
  apiVersion: string;
  path: string;
  namespaced: boolean;
}

const COLLECTIONS: Collection[] = [
  { kind: 'Namespace', apiVersion: 'v1', path: '/api/v1/namespaces', namespaced: false },
  { kind: 'Node', apiVersion: 'v1', path: '/api/v1/nodes', namespaced: false },
  { kind: 'Pod', apiVersion: 'v1', path: '/api/v1/pods', namespaced: true },
  { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services', namespaced: true },
  { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', path: '/apis/discovery.k8s.io/v1/endpointslices', namespaced: true },
  { kind: 'Gateway', apiVersion: 'gateway.networking.k8s.io/v1', path: '/apis/gateway.networking.k8s.io/v1/gateways', namespaced: true },
  { kind: 'AuthorizationPolicy', apiVersion: 'security.istio.io/v1', path: '/apis/security.istio.io/v1/authorizationpolicies', namespaced: true },
  { kind: 'PeerAuthentication', apiVersion: 'security.istio.io/v1', path: '/apis/security.istio.io/v1/peerauthentications', namespaced: true },
  { kind: 'HTTPRoute', apiVersion: 'gateway.networking.k8s.io/v1', path: '/apis/gateway.networking.k8s.io/v1/httproutes', namespaced: true },
  { kind: 'GRPCRoute', apiVersion: 'gateway.networking.k8s.io/v1', path: '/apis/gateway.networking.k8s.io/v1/grpcroutes', namespaced: true },
  // Written by the control plane's waypoint controller (POST, then merge PATCH).
  { kind: 'ServiceAccount', apiVersion: 'v1', path: '/api/v1/serviceaccounts', namespaced: true },
  { kind: 'Deployment', apiVersion: 'apps/v1', path: '/apis/apps/v1/deployments', namespaced: true },
  // Also written through POST/PUT (the root publisher); listed and watched with a fieldSelector (its watch).
  { kind: 'ConfigMap', apiVersion: 'v1', path: '/api/v1/configmaps', namespaced: true },
];

type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface HistoryEntry {
  resourceVersion: number;
  kind: string;
  type: WatchEventType;
  object: K8sObject;
}

interface OpenWatch {
  collection: Collection;
  response: ServerResponse;
  bookmarks: boolean;
  /** The watch's fieldSelector. */
  selected: (object: K8sObject) => boolean;
}

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const result: Record<string, unknown> = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

/** `fieldSelector=metadata.name=a,metadata.namespace=b` as a filter (the two fields every kind supports). */
function fieldSelector(url: URL): (object: K8sObject) => boolean {
  const terms = (url.searchParams.get('fieldSelector') ?? '')
    .split(',')
    .filter((term) => term !== '')
    .map((term) => {
      const [field, value] = term.split('=');
      if (field !== 'metadata.name' && field !== 'metadata.namespace') throw new Error(`the fake API server does not select on ${field}`);
      return { field, value };
    });
  return (object) => terms.every(({ field, value }) => (field === 'metadata.name' ? object.metadata?.name : object.metadata?.namespace) === value);
}

export interface TokenIdentity {
  username: string;
  node?: string;
  /** What the token is for; absent: the API server's own audience only. */
  audiences?: string[];
}

/** The API server's own audience: a token requested without an audience is for it. */
export const API_SERVER_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';

export interface FakeKubeApiServerOptions {
  /** Path of the network namespace to listen in (e.g. /run/netns/<name>); this process's own when absent. */
  netns?: string;
  /** Address to listen on (also in the certificate's SANs); default 127.0.0.1. */
  host?: string;
  /** Default 0: any free port. */
  port?: number;
  /** Serve the API under this path (no trailing slash), as behind a proxy; `url` includes it. */
  pathPrefix?: string;
}

export class FakeKubeApiServer {
  readonly caPem: string;
  readonly url: string;
  /** Bearer token the client must send (the kubeconfig carries it). */
  readonly clientToken: string;
  /** Tokens a TokenReview accepts, and whose they are. */
  readonly reviewTokens = new Map<string, TokenIdentity>();
  /** Every request as `METHOD path?query`, for asserting lists and watches. */
  readonly requests: string[] = [];
  /** Every status subresource write, as `<Kind> <namespace>/<name>`. */
  readonly statusWrites: string[] = [];
  readonly #server: https.Server;
  readonly #pathPrefix: string;
  readonly #sockets = new Set<Socket>();
  readonly #objects = new Map<string, Map<string, K8sObject>>();
  /** Secrets by `<namespace>/<name>` (get and create only: what the CA's root store needs). */
  readonly secrets = new Map<string, K8sObject>();
  readonly configMaps = new Map<string, K8sObject>();
  readonly #history: HistoryEntry[] = [];
  readonly #watches = new Set<OpenWatch>();
  #resourceVersion = 1;
  /** While set, every request fails with this HTTP status (an API server restarting or overloaded). */
  #failWith: number | undefined;
  #heldWrites: Array<() => void> | undefined;
  /** While set, watch requests wait (as behind a partitioned network) until `releaseWatches`. */
  #heldWatches: (() => void)[] | undefined;
  /** Watches from before this version get 410 Gone. */
  #compactedThrough = 0;
  /** The next cluster IP a created Service gets (10.96.x.y). */
  #nextClusterIp = 10;

  private constructor(server: https.Server, caPem: string, origin: string, clientToken: string, pathPrefix: string) {
    this.#server = server;
    this.caPem = caPem;
    this.url = `${origin}${pathPrefix}`;
    this.#pathPrefix = pathPrefix;
    this.clientToken = clientToken;
    // ConfigMaps written over HTTP are the same objects lists and watches see.
    this.#objects.set('ConfigMap', this.configMaps);
    server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
    server.on('request', (request: IncomingMessage, response: ServerResponse) => this.#handle(request, response));
  }

  static async start(options: FakeKubeApiServerOptions = {}): Promise<FakeKubeApiServer> {
    const host = options.host ?? '127.0.0.1';
    const keys = await generateKeyPair();
    const now = Date.now();
    const certificate = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '01',
      name: 'CN=fake-kube-apiserver',
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 24 * 3600_000),
      signingAlgorithm: SIGNING_ALGORITHM,
      keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([
          { type: 'ip', value: '127.0.0.1' },
          ...(host !== '127.0.0.1' ? [{ type: 'ip' as const, value: host }] : []),
          { type: 'dns', value: 'localhost' },
        ]),
      ],
    });
    const caPem = certificate.toString('pem') + '\n';
    const server = https.createServer({ key: keys.privateKeyPem, cert: caPem });
    if (options.netns === undefined) {
      await new Promise<void>((resolve) => server.listen(options.port ?? 0, host, resolve));
    } else {
      const fd = nativeSockets.listenTcp({ netns: options.netns, host, port: options.port ?? 0 });
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          // `{ fd }` is Node's documented handle form of listen(): serve a socket opened in another namespace.
          server.listen({ fd }, () => {
            server.off('error', reject);
            resolve();
          });
        });
      } catch (error) {
        nativeSockets.closeFd(fd);
        throw error;
      }
    }
    const port = (server.address() as AddressInfo).port;
    return new FakeKubeApiServer(server, caPem, `https://${host}:${port}`, `client-${randomUUID()}`, options.pathPrefix ?? '');
  }

  /** A KubeConfig for client-node: this server, its CA, the client token. */
  kubeConfig(): KubeConfig {
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      clusters: [{ name: 'fake', server: this.url, caData: Buffer.from(this.caPem).toString('base64'), skipTLSVerify: false }],
      users: [{ name: 'control-plane', token: this.clientToken }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'control-plane' }],
      currentContext: 'fake',
    });
    return kubeConfig;
  }

  /** The same kubeconfig as YAML, for writing to a file (`--kubeconfig`). */
  kubeConfigYaml(): string {
    return this.kubeConfig().exportConfig();
  }

  get resourceVersion(): number {
    return this.#resourceVersion;
  }

  /**
   * The kubelet's TokenRequest for a pod of service account `namespace/name` on `node`: a new token whose
   * TokenReview answers `system:serviceaccount:<namespace>:<name>`, bound to the node.
   */
  issueServiceAccountToken(namespace: string, name: string, node?: string, audiences?: string[]): string {
    const token = `sa-${randomBytes(24).toString('hex')}`;
    this.reviewTokens.set(token, { username: `system:serviceaccount:${namespace}:${name}`, ...(node !== undefined ? { node } : {}), ...(audiences ? { audiences } : {}) });
    return token;
  }

  /** One stored object (namespace ignored for cluster-scoped kinds), undefined when absent. */
  get(kind: string, namespace: string | undefined, name: string): K8sObject | undefined {
    const collection = this.#collection(kind);
    return this.#store(collection).get(collection.namespaced ? `${namespace || 'default'}/${name}` : name);
  }

  /** Creates or replaces an object (kind and metadata.name required); returns it with its new resourceVersion. */
  apply(object: K8sObject): K8sObject {
    const collection = this.#collection(object.kind ?? '');
    const store = this.#store(collection);
    const key = this.#key(collection, object);
    const existing = store.get(key);
    const stored: K8sObject = {
      ...object,
      apiVersion: collection.apiVersion,
      kind: collection.kind,
      metadata: {
        ...object.metadata,
        ...(collection.namespaced ? { namespace: object.metadata?.namespace || 'default' } : {}),
        uid: existing?.metadata?.uid ?? object.metadata?.uid ?? randomUUID(),
        resourceVersion: String(++this.#resourceVersion),
      } as K8sObject['metadata'],
    };
    store.set(key, stored);
    this.#record(collection, existing ? 'MODIFIED' : 'ADDED', stored);
    return stored;
  }

  remove(kind: string, namespace: string | undefined, name: string): void {
    const collection = this.#collection(kind);
    const store = this.#store(collection);
    const key = collection.namespaced ? `${namespace || 'default'}/${name}` : name;
    const existing = store.get(key);
    if (!existing) return;
    store.delete(key);
    const deleted = { ...existing, metadata: { ...existing.metadata, resourceVersion: String(++this.#resourceVersion) } as K8sObject['metadata'] };
    this.#record(collection, 'DELETED', deleted);
  }

  /** Forgets all history up to now: a watch resuming from an older version gets 410 Gone. */
  compact(): void {
    this.#compactedThrough = this.#resourceVersion;
    this.#history.length = 0;
  }

  /** Sends a BOOKMARK (current resourceVersion) to every watch that asked for bookmarks. */
  bookmark(): number {
    let sent = 0;
    for (const watch of this.#watches) {
      if (!watch.bookmarks) continue;
      this.#writeEvent(watch, 'BOOKMARK', { kind: watch.collection.kind, apiVersion: watch.collection.apiVersion, metadata: { resourceVersion: String(this.#resourceVersion) } });
      sent++;
    }
    return sent;
  }

  /** Ends every open watch stream (as an API server restart or a load balancer timeout would). */
  dropWatches(): void {
    for (const watch of this.#watches) watch.response.end();
    this.#watches.clear();
  }

  /** Ends open watches and holds new ones until `releaseWatches`: changes made meanwhile are missed by them. */
  holdWatches(): void {
    this.#heldWatches ??= [];
    this.dropWatches();
  }

  releaseWatches(): void {
    const held = this.#heldWatches ?? [];
    this.#heldWatches = undefined;
    for (const resume of held) resume();
  }

  /**
   * Holds every write (POST/PUT) of Secrets and ConfigMaps, unanswered and not applied, until `releaseWrites`: lets a
   * test make two clients' read-then-create interleave (both read, both write, then one wins).
   */
  holdWrites(): void {
    this.#heldWrites ??= [];
  }

  /** Applies the held writes in the order they arrived. */
  releaseWrites(): void {
    const held = this.#heldWrites ?? [];
    this.#heldWrites = undefined;
    for (const apply of held) apply();
  }

  /** Cuts every connection and answers every request with `status` until `recover` (an outage). */
  fail(status = 503): void {
    this.#failWith = status;
    this.dropWatches();
    for (const socket of this.#sockets) socket.destroy();
  }

  recover(): void {
    this.#failWith = undefined;
  }

  openWatches(kind?: string): number {
    return [...this.#watches].filter((watch) => !kind || watch.collection.kind === kind).length;
  }

  async close(): Promise<void> {
    this.dropWatches();
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #collection(kind: string): Collection {
    const collection = COLLECTIONS.find((entry) => entry.kind === kind);
    if (!collection) throw new Error(`the fake API server does not serve kind ${kind}`);
    return collection;
  }

  #store(collection: Collection): Map<string, K8sObject> {
    let store = this.#objects.get(collection.kind);
    if (!store) {
      store = new Map();
      this.#objects.set(collection.kind, store);
    }
    return store;
  }

  #key(collection: Collection, object: K8sObject): string {
    return collection.namespaced ? `${object.metadata?.namespace || 'default'}/${object.metadata?.name}` : String(object.metadata?.name);
  }

  #record(collection: Collection, type: WatchEventType, object: K8sObject): void {
    this.#history.push({ resourceVersion: this.#resourceVersion, kind: collection.kind, type, object });
    for (const watch of this.#watches) if (watch.collection === collection && watch.selected(object)) this.#writeEvent(watch, type, object);
  }

  #writeEvent(watch: OpenWatch, type: string, object: unknown): void {
    watch.response.write(`${JSON.stringify({ type, object })}\n`);
  }

  #status(response: ServerResponse, code: number, reason: string, message: string): void {
    response.writeHead(code, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }));
  }

  #handle(request: IncomingMessage, response: ServerResponse): void {
    const received = new URL(request.url ?? '/', 'https://fake-kube-apiserver');
    this.requests.push(`${request.method} ${received.pathname}${received.search}`);
    if (!received.pathname.startsWith(`${this.#pathPrefix}/`)) {
      this.#status(response, 404, 'NotFound', `the server could not find the requested resource (${request.method} ${received.pathname}): the API is served under ${this.#pathPrefix}/`);
      return;
    }
    const url = new URL(`${received.pathname.slice(this.#pathPrefix.length)}${received.search}`, 'https://fake-kube-apiserver');
    if (this.#failWith !== undefined) {
      this.#status(response, this.#failWith, 'ServiceUnavailable', 'the API server is unavailable');
      return;
    }
    if (request.headers.authorization !== `Bearer ${this.clientToken}`) {
      this.#status(response, 401, 'Unauthorized', 'Unauthorized');
      return;
    }
    if (request.method === 'POST' && url.pathname === '/apis/authentication.k8s.io/v1/tokenreviews') {
      this.#tokenReview(request, response);
      return;
    }
    const storedPath = /^\/api\/v1\/namespaces\/([^/]+)\/(secrets|configmaps)(?:\/([^/]+))?$/.exec(url.pathname);
    if (storedPath) {
      this.#stored(storedPath[2] === 'secrets' ? this.secrets : this.configMaps, storedPath[2]!, request, response, storedPath[1]!, storedPath[3]);
      return;
    }
    if (request.method === 'PATCH' && url.pathname.endsWith('/status')) {
      this.#patchStatus(request, response, url.pathname.slice(0, -'/status'.length));
      return;
    }
    if (request.method === 'PATCH') {
      this.#patch(request, response, url.pathname);
      return;
    }
    if (request.method === 'POST') {
      this.#create(request, response, url.pathname);
      return;
    }
    const single = request.method === 'GET' ? this.#objectAt(url.pathname) : undefined;
    if (single) {
      if (single.object) {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify(single.object));
      } else {
        this.#status(response, 404, 'NotFound', `${single.collection.path.split('/').pop()} "${single.name}" not found`);
      }
      return;
    }
    const collection = COLLECTIONS.find((entry) => entry.path === url.pathname);
    if (request.method !== 'GET' || !collection) {
      this.#status(response, 404, 'NotFound', `the server could not find the requested resource (${request.method} ${url.pathname})`);
      return;
    }
    const watch = url.searchParams.get('watch');
    if ((watch === 'true' || watch === '1') && this.#heldWatches) this.#heldWatches.push(() => this.#watch(collection, url, response));
    else if (watch === 'true' || watch === '1') this.#watch(collection, url, response);
    else this.#list(collection, url, response);
  }

  /** `PATCH <object>` with a JSON merge patch (RFC 7386: null deletes a key), for any served kind. */
  #patch(request: IncomingMessage, response: ServerResponse, pathname: string): void {
    const target = this.#objectAt(pathname);
    if (!target) {
      this.#status(response, 404, 'NotFound', `the server could not find the requested resource (PATCH ${pathname})`);
      return;
    }
    if (!String(request.headers['content-type']).startsWith('application/merge-patch+json')) {
      this.#status(response, 415, 'UnsupportedMediaType', 'the fake API server takes application/merge-patch+json patches only');
      return;
    }
    this.#readJson<Record<string, unknown>>(request, response, (patch) => {
      if (!target.object) {
        this.#status(response, 404, 'NotFound', `${target.collection.path.split('/').pop()} "${target.name}" not found`);
        return;
      }
      const stored = this.apply(mergePatch(target.object, patch) as K8sObject);
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(stored));
    });
  }

  /** `PATCH <object>/status`: the patch's `status` merged into the object's; everything else in it ignored. */
  #patchStatus(request: IncomingMessage, response: ServerResponse, pathname: string): void {
    const target = this.#objectAt(pathname);
    if (!target?.object) {
      this.#status(response, 404, 'NotFound', `the server could not find the requested resource (PATCH ${pathname}/status)`);
      return;
    }
    if (!String(request.headers['content-type']).startsWith('application/merge-patch+json')) {
      this.#status(response, 415, 'UnsupportedMediaType', 'the fake API server takes application/merge-patch+json patches only');
      return;
    }
    this.#readJson<{ status?: unknown }>(request, response, (patch) => {
      const current = this.#objectAt(pathname)?.object;
      if (!current) {
        this.#status(response, 404, 'NotFound', `${target.collection.path.split('/').pop()} "${target.name}" not found`);
        return;
      }
      const stored = this.apply({ ...current, status: mergePatch(current.status, patch.status ?? {}) });
      this.statusWrites.push(`${target.collection.kind} ${current.metadata?.namespace}/${current.metadata?.name}`);
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(stored));
    });
  }

  /** `POST <prefix>/namespaces/<ns>/<resource>`: creates the object in that namespace. */
  #create(request: IncomingMessage, response: ServerResponse, pathname: string): void {
    const collection = COLLECTIONS.find((entry) => {
      if (!entry.namespaced) return false;
      const prefix = entry.path.slice(0, entry.path.lastIndexOf('/'));
      const resource = entry.path.slice(entry.path.lastIndexOf('/') + 1);
      return new RegExp(`^${prefix}/namespaces/[^/]+/${resource}$`).test(pathname);
    });
    if (!collection) {
      this.#status(response, 404, 'NotFound', `the server could not find the requested resource (POST ${pathname})`);
      return;
    }
    const namespace = decodeURIComponent(pathname.split('/namespaces/')[1]!.split('/')[0]!);
    this.#readJson<K8sObject>(request, response, (object) => {
      const name = object.metadata?.name;
      if (!name) {
        this.#status(response, 422, 'Invalid', 'metadata.name: Required value');
        return;
      }
      if (this.get(collection.kind, namespace, name)) {
        this.#status(response, 409, 'AlreadyExists', `${collection.path.split('/').pop()} "${name}" already exists`);
        return;
      }
      let created: K8sObject = { ...object, kind: collection.kind, metadata: { ...object.metadata, namespace } as K8sObject['metadata'] };
      const spec = created.spec as { clusterIP?: string } | undefined;
      if (collection.kind === 'Service' && !spec?.clusterIP) created = { ...created, spec: { ...spec, clusterIP: `10.96.${Math.floor(this.#nextClusterIp / 250)}.${(this.#nextClusterIp++ % 250) + 1}` } };
      const stored = this.apply(created);
      response.writeHead(201, { 'content-type': 'application/json' });
      response.end(JSON.stringify(stored));
    });
  }

  /** `GET /api/v1/namespaces/<ns>/pods/<name>` or `GET /api/v1/namespaces/<name>`: one object, as a real server serves it. */
  #objectAt(pathname: string): { collection: Collection; name: string; object: K8sObject | undefined } | undefined {
    for (const collection of COLLECTIONS) {
      const prefix = collection.path.slice(0, collection.path.lastIndexOf('/'));
      const resource = collection.path.slice(collection.path.lastIndexOf('/') + 1);
      const match = collection.namespaced
        ? new RegExp(`^${prefix}/namespaces/([^/]+)/${resource}/([^/]+)$`).exec(pathname)
        : new RegExp(`^${collection.path}/([^/]+)$`).exec(pathname);
      if (!match) continue;
      const name = decodeURIComponent(match[collection.namespaced ? 2 : 1]!);
      const key = collection.namespaced ? `${decodeURIComponent(match[1]!)}/${name}` : name;
      return { collection, name, object: this.#store(collection).get(key) };
    }
    return undefined;
  }

  #list(collection: Collection, url: URL, response: ServerResponse): void {
    const selected = fieldSelector(url);
    const items = [...this.#store(collection).values()].filter(selected).map((object) => {
      // List items omit kind and apiVersion, as the real server does.
      const { kind: _kind, apiVersion: _apiVersion, ...rest } = object;
      return rest;
    });
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ kind: `${collection.kind}List`, apiVersion: collection.apiVersion, metadata: { resourceVersion: String(this.#resourceVersion) }, items }));
  }

  #watch(collection: Collection, url: URL, response: ServerResponse): void {
    const from = Number(url.searchParams.get('resourceVersion') || this.#resourceVersion);
    response.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    response.flushHeaders();
    const open: OpenWatch = { collection, response, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true', selected: fieldSelector(url) };
    if (from < this.#compactedThrough) {
      this.#writeEvent(open, 'ERROR', {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: `too old resource version: ${from} (${this.#compactedThrough})`,
        reason: 'Expired',
        code: 410,
      });
      response.end();
      return;
    }
    for (const entry of this.#history) if (entry.kind === collection.kind && entry.resourceVersion > from && open.selected(entry.object)) this.#writeEvent(open, entry.type, entry.object);
    this.#watches.add(open);
    response.on('close', () => this.#watches.delete(open));
  }

  #readJson<T>(request: IncomingMessage, response: ServerResponse, use: (body: T) => void): void {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      let body: T;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as T;
      } catch {
        this.#status(response, 400, 'BadRequest', 'the request body is not JSON');
        return;
      }
      use(body);
    });
  }

  #stored(store: Map<string, K8sObject>, resource: string, request: IncomingMessage, response: ServerResponse, namespace: string, name: string | undefined): void {
    if (request.method === 'GET' && name) {
      const object = store.get(`${namespace}/${name}`);
      if (!object) {
        this.#status(response, 404, 'NotFound', `${resource} "${name}" not found`);
        return;
      }
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(object));
      return;
    }
    if ((request.method === 'POST' && !name) || (request.method === 'PUT' && name)) {
      this.#readJson<K8sObject>(request, response, (object) => {
        if (this.#heldWrites) {
          this.#heldWrites.push(() => this.#write(store, resource, request, response, namespace, name, object));
          return;
        }
        this.#write(store, resource, request, response, namespace, name, object);
      });
      return;
    }
    this.#status(response, 405, 'MethodNotAllowed', `${request.method} is not supported on ${resource} here`);
  }

  #write(store: Map<string, K8sObject>, resource: string, request: IncomingMessage, response: ServerResponse, namespace: string, name: string | undefined, object: K8sObject): void {
    const key = `${namespace}/${name ?? object.metadata?.name}`;
    const existing = store.get(key);
    if (request.method === 'POST' && existing) {
      this.#status(response, 409, 'AlreadyExists', `${resource} "${object.metadata?.name}" already exists`);
      return;
    }
    if (request.method === 'PUT' && !existing) {
      this.#status(response, 404, 'NotFound', `${resource} "${name}" not found`);
      return;
    }
    let stored: K8sObject;
    if (store === this.configMaps) {
      stored = this.apply({ ...object, kind: 'ConfigMap', metadata: { ...object.metadata, namespace, name: name ?? object.metadata?.name } as K8sObject['metadata'] });
    } else {
      const uid = existing?.metadata?.uid ?? randomUUID();
      stored = { ...object, metadata: { ...object.metadata, namespace, uid, resourceVersion: String(++this.#resourceVersion) } as K8sObject['metadata'] };
      store.set(key, stored);
    }
    response.writeHead(existing ? 200 : 201, { 'content-type': 'application/json' });
    response.end(JSON.stringify(stored));
  }

  #tokenReview(request: IncomingMessage, response: ServerResponse): void {
    this.#readJson<{ spec?: { token?: string; audiences?: string[] } }>(request, response, (review) => {
      const identity = this.reviewTokens.get(review.spec?.token ?? '');
      // As the API server: the token must be for one of the audiences asked (its own when none are asked).
      const tokenAudiences = identity?.audiences ?? [API_SERVER_AUDIENCE];
      const audiences = tokenAudiences.filter((audience) => (review.spec?.audiences ?? [API_SERVER_AUDIENCE]).includes(audience));
      const status = identity && audiences.length > 0
        ? { authenticated: true, audiences, user: { username: identity.username, uid: randomUUID(), ...(identity.node ? { extra: { 'authentication.kubernetes.io/node-name': [identity.node] } } : {}) } }
        : { authenticated: false, error: identity ? `token audiences ${JSON.stringify(tokenAudiences)} is invalid for the target audiences ${JSON.stringify(review.spec?.audiences ?? [API_SERVER_AUDIENCE])}` : 'invalid bearer token' };
      response.writeHead(201, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: {}, spec: review.spec, status }));
    });
  }
}
