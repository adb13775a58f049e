/**
 * The local cluster's Kubernetes API over HTTPS, for kubectl and the official clients: discovery (the legacy form:
 * `/api`, `/apis`, each group version's resource list; clients fall back to it from aggregated discovery), `list`
 * and `get` (JSON, or the Table kubectl asks for), `watch` (JSON lines from a resourceVersion; 410 Expired past the
 * history), `create`, `update`, `patch` (merge, strategic merge, JSON patch), `delete`, label and field selectors,
 * `pods/log` (with `container`, `tailLines`, `follow`) and the `status` subresource of the mesh kinds. Every request
 * needs the bearer token of the kubeconfig.
 *
 * Reads come from a VersionedObjectStore; writes go to a ClusterWrites, which owns what a write means (here: an
 * edit of the user's directory, applied by the local runtime) and answers with the object as stored.
 *
 * Owns: HTTP, routing, authentication, discovery documents, response shapes, log streaming.
 * Must not know about: where objects live or how the cluster applies a change.
 */
import { open, stat } from 'node:fs/promises';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { nativeSockets } from '../../agent/inpod/sockets.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { admit, fieldValidation } from './admission.ts';
import { bearerMatches, type ServingCredentials } from './credentials.ts';
import { ApiError, notFound } from './errors.ts';
import type { VersionedObjectStore, WatchEvent } from './object-store.ts';
import { openApiDocument, openApiIndex } from './openapi.ts';
import { applyPatch } from './patch.ts';
import { API_RESOURCES, apiGroups, groupVersion, resourceAt, resourceVerbs, type ApiResource } from './resources.ts';
import { fieldSelector, labelSelector } from './selectors.ts';
import { renderTable, wantsTable } from './tables.ts';

/** Kubernetes' own request body limit. */
const MAX_BODY_BYTES = 3 * 1024 * 1024;
/** How often a followed log is checked for more output. */
const LOG_FOLLOW_POLL_MS = 250;
/** The version `kubectl version` shows: the API level served, not a kubelet's. */
const SERVED_VERSION = { major: '1', minor: '32', gitVersion: 'v1.32.0-ambit-local', platform: 'linux/amd64' };

/** What a write means: the server validates the request and leaves the change to this. */
export interface ClusterWrites {
  /** Creates `object` (namespace already set for namespaced kinds); resolves with it as stored. */
  create(resource: ApiResource, object: K8sObject, dryRun: boolean): Promise<K8sObject>;
  /** Replaces an object whole (PUT). */
  update(resource: ApiResource, namespace: string | undefined, name: string, object: K8sObject, dryRun: boolean): Promise<K8sObject>;
  /** Changes an object by `change`, applied to the object as its owner wrote it (not the live view with status). */
  patch(resource: ApiResource, namespace: string | undefined, name: string, change: (current: K8sObject) => K8sObject, dryRun: boolean): Promise<K8sObject>;
  /**
   * Sets an object's status (its `status` subresource, written by a controller: the control plane), leaving the rest
   * as its owner wrote it; resolves with the object as stored.
   */
  setStatus(resource: ApiResource, namespace: string | undefined, name: string, status: unknown): Promise<K8sObject>;
  /** Deletes an object; resolves with it as it was. */
  remove(resource: ApiResource, namespace: string | undefined, name: string, dryRun: boolean): Promise<K8sObject>;
  /** The log file of a pod's container (the first when not named). */
  containerLogFile(namespace: string, pod: string, container: string | undefined): Promise<string>;
  /** Whether the pod still exists (a followed log ends when it goes). */
  podExists(namespace: string, pod: string): boolean;
}

export interface LocalApiServerOptions {
  store: VersionedObjectStore;
  writes: ClusterWrites;
  credentials: ServingCredentials;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: any free port. */
  port?: number;
  /**
   * Also serve inside this network namespace (a path such as /run/netns/<name>) on `host`, any free port: where the
   * local mesh's control plane runs (the fabric). The socket is opened there by the native socket helper.
   */
  alsoIn?: { netns: string; host: string };
}

interface Route {
  resource: ApiResource;
  namespace: string | undefined;
  name: string | undefined;
  subresource: string | undefined;
}

function sendJson(response: ServerResponse, status: number, body: unknown, warnings: string[] = []): void {
  const text = JSON.stringify(body ?? {});
  // RFC 7234 warnings, as the API server sends them (kubectl prints each as "Warning: ...").
  const warning = warnings.map((message) => `299 - ${JSON.stringify(message)}`);
  response.statusCode = status;
  response.setHeader('content-type', 'application/json');
  response.setHeader('content-length', Buffer.byteLength(text));
  if (warning.length > 0) response.setHeader('warning', warning);
  response.end(text);
}

function readBody(request: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new ApiError('BadRequest', `the request body is larger than ${MAX_BODY_BYTES} bytes`));
        request.destroy();
        return;
      }
      chunks.push(chunk);
    });
    request.on('error', reject);
    request.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        reject(new ApiError('BadRequest', 'the request body is not JSON'));
      }
    });
  });
}

function isObject(value: unknown): value is K8sObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Listens on a port, or on a socket opened elsewhere (`{ fd }`, Node's documented handle form of listen()). */
function listen(server: https.Server, target: { port: number; host: string } | { fd: number }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if ('fd' in target) server.listen({ fd: target.fd }, done);
    else server.listen(target.port, target.host, done);
  });
}

export class LocalApiServer {
  readonly url: string;
  /** The URL inside `alsoIn`'s namespace, when asked for. */
  inNamespaceUrl: string | undefined;
  readonly #servers: https.Server[] = [];
  readonly #options: LocalApiServerOptions;
  readonly #sockets = new Set<Socket>();
  readonly #closers = new Set<() => void>();

  private constructor(url: string, options: LocalApiServerOptions) {
    this.url = url;
    this.#options = options;
  }

  static async start(options: LocalApiServerOptions): Promise<LocalApiServer> {
    const host = options.host ?? '127.0.0.1';
    const tls = { key: options.credentials.keyPem, cert: options.credentials.certPem };
    const server = https.createServer(tls);
    await listen(server, { port: options.port ?? 0, host });
    const api = new LocalApiServer(`https://${host}:${(server.address() as AddressInfo).port}`, options);
    api.#serve(server);
    if (options.alsoIn !== undefined) {
      const inside = https.createServer(tls);
      const fd = nativeSockets.listenTcp({ netns: options.alsoIn.netns, host: options.alsoIn.host, port: 0 });
      try {
        await listen(inside, { fd });
      } catch (error) {
        nativeSockets.closeFd(fd);
        await api.close();
        throw error;
      }
      api.#serve(inside);
      api.inNamespaceUrl = `https://${options.alsoIn.host}:${(inside.address() as AddressInfo).port}`;
    }
    return api;
  }

  #serve(server: https.Server): void {
    this.#servers.push(server);
    server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
    server.on('request', (request: IncomingMessage, response: ServerResponse) => {
      this.#handle(request, response).catch((error: unknown) => this.#fail(response, error));
    });
  }

  async close(): Promise<void> {
    for (const close of this.#closers) close();
    for (const socket of this.#sockets) socket.destroy();
    await Promise.all(this.#servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }

  #fail(response: ServerResponse, error: unknown): void {
    const apiError = error instanceof ApiError ? error : new ApiError('InternalError', (error as Error).message ?? String(error));
    if (response.headersSent) {
      response.destroy();
      return;
    }
    sendJson(response, apiError.httpStatus, apiError.toStatus());
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'https://local');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    if (path === '/healthz' || path === '/livez' || path === '/readyz') {
      response.writeHead(200, { 'content-type': 'text/plain' });
      response.end('ok');
      return;
    }
    if (!bearerMatches(request.headers.authorization, this.#options.credentials.token)) throw new ApiError('Unauthorized', 'Unauthorized');
    if (request.method === 'GET' && this.#discovery(path, response)) return;
    const route = this.#route(path);
    const method = request.method ?? 'GET';
    const { resource, namespace, name, subresource } = route;
    const dryRun = url.searchParams.get('dryRun') === 'All';
    const validation = fieldValidation(url.searchParams.get('fieldValidation'));
    const warnings: string[] = [];
    if (subresource !== undefined) {
      if (resource.plural === 'pods' && subresource === 'log' && method === 'GET') return this.#log(namespace!, name!, url, request, response);
      if (resource.plural === 'deployments' && subresource === 'scale') return this.#scale(route, method, request, response, dryRun);
      if (resource.statusSubresource && subresource === 'status') return this.#status(route, method, request, response, dryRun);
      throw new ApiError('NotFound', `the server could not find the requested resource (${method} ${path}): subresource ${subresource} is not served`);
    }
    if (name === undefined) {
      if (method === 'GET') return url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1' ? this.#watch(route, url, request, response) : this.#list(route, url, request, response);
      if (method === 'POST') return this.#create(route, request, response, dryRun, validation);
      throw new ApiError('MethodNotAllowed', `${method} on the ${resource.plural} collection is not supported`);
    }
    if (method !== 'GET' && this.#options.store.get(resource, namespace, name) === undefined) throw notFound(resource.plural, name);
    switch (method) {
      case 'GET': {
        const object = this.#options.store.get(resource, namespace, name);
        if (object === undefined) throw notFound(resource.plural, name);
        if (wantsTable(request.headers.accept)) sendJson(response, 200, renderTable(resource, [object], String(this.#options.store.resourceVersion)));
        else sendJson(response, 200, object);
        return;
      }
      case 'PUT': {
        const body = await readBody(request);
        if (!isObject(body) || body.metadata?.name !== name) throw new ApiError('BadRequest', `the name of the object (${isObject(body) ? body.metadata?.name : '?'}) does not match the name on the URL (${name})`);
        this.#writable(resource);
        const object = this.#normalise(resource, body, namespace);
        warnings.push(...admit(object, validation));
        sendJson(response, 200, await this.#options.writes.update(resource, namespace, name, object, dryRun), warnings);
        return;
      }
      case 'PATCH': {
        const body = await readBody(request);
        const contentType = String(request.headers['content-type'] ?? '');
        this.#writable(resource);
        const change = (current: K8sObject): K8sObject => {
          const next = applyPatch(contentType, current, body);
          if (!isObject(next)) throw new ApiError('Invalid', 'the patch does not leave an object');
          if (next.metadata?.name !== name) throw new ApiError('Invalid', 'a patch cannot change metadata.name');
          warnings.push(...admit(next, validation));
          return next;
        };
        sendJson(response, 200, await this.#options.writes.patch(resource, namespace, name, change, dryRun), warnings);
        return;
      }
      case 'DELETE': {
        this.#writable(resource);
        sendJson(response, 200, await this.#options.writes.remove(resource, namespace, name, dryRun));
        return;
      }
      default:
        throw new ApiError('MethodNotAllowed', `${method} is not supported on ${resource.plural}`);
    }
  }

  #writable(resource: ApiResource): void {
    if (!resource.writable) throw new ApiError('MethodNotAllowed', `${resource.plural} are the local runtime's own and cannot be changed through the API`);
  }

  /** Kind, apiVersion and namespace as the URL says, the server's own metadata fields dropped. */
  #normalise(resource: ApiResource, body: K8sObject, namespace: string | undefined): K8sObject {
    if (body.kind !== undefined && body.kind !== resource.kind) throw new ApiError('BadRequest', `the object's kind ${body.kind} does not match the URL's ${resource.plural}`);
    if (resource.namespaced && body.metadata?.namespace !== undefined && body.metadata.namespace !== namespace) {
      throw new ApiError('BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
    }
    const { resourceVersion: _version, uid: _uid, creationTimestamp: _created, managedFields: _managed, generation: _generation, ...metadata } = (body.metadata ?? {}) as Record<string, unknown>;
    const { status: _status, ...rest } = body;
    return { ...rest, apiVersion: groupVersion(resource), kind: resource.kind, metadata: { ...metadata, ...(resource.namespaced ? { namespace } : {}) } as K8sObject['metadata'] };
  }

  async #create(route: Route, request: IncomingMessage, response: ServerResponse, dryRun: boolean, validation: ReturnType<typeof fieldValidation>): Promise<void> {
    const body = await readBody(request);
    if (!isObject(body) || typeof body.metadata?.name !== 'string' || body.metadata.name === '') {
      throw new ApiError('Invalid', `${route.resource.kind} must have metadata.name (generateName is not supported)`);
    }
    if (route.resource.namespaced && route.namespace === undefined) throw new ApiError('BadRequest', `${route.resource.plural} are namespaced: POST to /namespaces/<ns>/${route.resource.plural}`);
    this.#writable(route.resource);
    const object = this.#normalise(route.resource, body, route.namespace);
    if (this.#options.store.get(route.resource, route.namespace, object.metadata!.name!) !== undefined) {
      throw new ApiError('AlreadyExists', `${route.resource.plural} "${object.metadata!.name}" already exists`);
    }
    const warnings = admit(object, validation);
    sendJson(response, 201, await this.#options.writes.create(route.resource, object, dryRun), warnings);
  }

  /** `deployments/<name>/scale` (kubectl scale): an autoscaling/v1 Scale read from, and written to, spec.replicas. */
  async #scale(route: Route, method: string, request: IncomingMessage, response: ServerResponse, dryRun: boolean): Promise<void> {
    const { resource, namespace, name } = route;
    const scaleOf = (object: K8sObject): K8sObject => {
      const spec = (object.spec ?? {}) as { replicas?: number; selector?: { matchLabels?: Record<string, string> } };
      const status = (object.status ?? {}) as { replicas?: number };
      const selector = Object.entries(spec.selector?.matchLabels ?? {}).map(([key, value]) => `${key}=${value}`).join(',');
      return { kind: 'Scale', apiVersion: 'autoscaling/v1', metadata: { ...object.metadata, name: name! }, spec: { replicas: spec.replicas ?? 1 }, status: { replicas: status.replicas ?? 0, selector } };
    };
    const live = this.#options.store.get(resource, namespace, name!);
    if (live === undefined) throw notFound(resource.plural, name!);
    if (method === 'GET') {
      sendJson(response, 200, scaleOf(live));
      return;
    }
    if (method !== 'PATCH' && method !== 'PUT') throw new ApiError('MethodNotAllowed', `${method} is not supported on deployments/scale`);
    const body = await readBody(request);
    const contentType = String(request.headers['content-type'] ?? '');
    const change = (current: K8sObject): K8sObject => {
      const scale = method === 'PUT' ? body : applyPatch(contentType, scaleOf(current), body);
      const replicas = (scale as { spec?: { replicas?: unknown } } | null)?.spec?.replicas;
      if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0) throw new ApiError('Invalid', 'spec.replicas must be a whole number of at least 0');
      return { ...current, spec: { ...(current.spec as object), replicas } };
    };
    sendJson(response, 200, scaleOf(await this.#options.writes.patch(resource, namespace, name!, change, dryRun)));
  }

  /**
   * `<kind>/<name>/status`: GET the object; PATCH (merge, strategic merge, JSON patch) or PUT change only its status,
   * as a cluster's API server does (metadata and spec in the body are ignored).
   */
  async #status(route: Route, method: string, request: IncomingMessage, response: ServerResponse, dryRun: boolean): Promise<void> {
    const { resource, namespace, name } = route;
    const live = this.#options.store.get(resource, namespace, name!);
    if (live === undefined) throw notFound(resource.plural, name!);
    if (method === 'GET') {
      sendJson(response, 200, live);
      return;
    }
    if (method !== 'PATCH' && method !== 'PUT') throw new ApiError('MethodNotAllowed', `${method} is not supported on ${resource.plural}/status`);
    const body = await readBody(request);
    const next = method === 'PUT' ? body : applyPatch(String(request.headers['content-type'] ?? ''), live, body);
    if (!isObject(next)) throw new ApiError('Invalid', 'the patch does not leave an object');
    const status = (next as { status?: unknown }).status;
    if (status !== undefined && (typeof status !== 'object' || status === null || Array.isArray(status))) throw new ApiError('Invalid', 'status must be an object');
    if (dryRun) {
      sendJson(response, 200, { ...live, status });
      return;
    }
    sendJson(response, 200, await this.#options.writes.setStatus(resource, namespace, name!, status));
  }

  #filtered(route: Route, url: URL): (object: K8sObject) => boolean {
    const labels = labelSelector(url.searchParams.get('labelSelector'));
    const fields = fieldSelector(url.searchParams.get('fieldSelector'));
    return (object) => labels(object) && fields(object);
  }

  #list(route: Route, url: URL, request: IncomingMessage, response: ServerResponse): void {
    const objects = this.#options.store.list(route.resource, route.namespace).filter(this.#filtered(route, url));
    objects.sort((a, b) => `${a.metadata?.namespace}/${a.metadata?.name}`.localeCompare(`${b.metadata?.namespace}/${b.metadata?.name}`));
    const resourceVersion = String(this.#options.store.resourceVersion);
    if (wantsTable(request.headers.accept)) {
      sendJson(response, 200, renderTable(route.resource, objects, resourceVersion));
      return;
    }
    sendJson(response, 200, { kind: `${route.resource.kind}List`, apiVersion: groupVersion(route.resource), metadata: { resourceVersion }, items: objects });
  }

  #watch(route: Route, url: URL, request: IncomingMessage, response: ServerResponse): void {
    const selected = this.#filtered(route, url);
    const table = wantsTable(request.headers.accept);
    const send = (event: WatchEvent): void => {
      if (!selected(event.object)) return;
      const object = table ? renderTable(route.resource, [event.object], String((event.object.metadata as { resourceVersion?: string } | undefined)?.resourceVersion)) : event.object;
      response.write(`${JSON.stringify({ type: event.type, object })}\n`);
    };
    response.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    response.flushHeaders();
    let stop: () => void;
    try {
      stop = this.#options.store.watch(route.resource, route.namespace, url.searchParams.get('resourceVersion') ?? undefined, send);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      response.end(`${JSON.stringify({ type: 'ERROR', object: error.toStatus() })}\n`);
      return;
    }
    const timeoutSeconds = Number(url.searchParams.get('timeoutSeconds') ?? 0);
    const timer = timeoutSeconds > 0 ? setTimeout(() => response.end(), timeoutSeconds * 1000) : undefined;
    const close = (): void => {
      stop();
      if (timer !== undefined) clearTimeout(timer);
      this.#closers.delete(close);
      response.end();
    };
    this.#closers.add(close);
    response.on('close', close);
  }

  async #log(namespace: string, pod: string, url: URL, request: IncomingMessage, response: ServerResponse): Promise<void> {
    const file = await this.#options.writes.containerLogFile(namespace, pod, url.searchParams.get('container') ?? undefined);
    const follow = url.searchParams.get('follow') === 'true';
    const tailLines = url.searchParams.has('tailLines') ? Number(url.searchParams.get('tailLines')) : undefined;
    response.writeHead(200, { 'content-type': 'text/plain' });
    let offset = 0;
    const size = (await stat(file).catch(() => undefined))?.size ?? 0;
    if (tailLines !== undefined && size > 0) {
      const handle = await open(file, 'r');
      try {
        const text = (await handle.readFile()).toString('utf8');
        const lines = text.endsWith('\n') ? text.slice(0, -1).split('\n') : text.split('\n');
        const tail = tailLines <= 0 ? [] : lines.slice(-tailLines);
        response.write(tail.length > 0 ? `${tail.join('\n')}\n` : '');
        offset = Buffer.byteLength(text);
      } finally {
        await handle.close();
      }
    }
    let closed = false;
    request.on('close', () => (closed = true));
    for (;;) {
      const handle = await open(file, 'r').catch(() => undefined);
      if (handle !== undefined) {
        try {
          const current = (await handle.stat()).size;
          if (current > offset) {
            const buffer = Buffer.alloc(current - offset);
            await handle.read(buffer, 0, buffer.length, offset);
            offset = current;
            response.write(buffer);
          }
        } finally {
          await handle.close();
        }
      }
      if (!follow || closed || !this.#options.writes.podExists(namespace, pod)) break;
      await new Promise((resolve) => setTimeout(resolve, LOG_FOLLOW_POLL_MS));
    }
    response.end();
  }

  #route(path: string): Route {
    let parts: string[];
    try {
      parts = path.split('/').filter((part) => part !== '').map(decodeURIComponent);
    } catch {
      throw new ApiError('BadRequest', `the path ${path} is not valid percent-encoding`);
    }
    let group: string;
    let version: string;
    let rest: string[];
    if (parts[0] === 'api' && parts.length >= 3) [group, version, rest] = ['', parts[1]!, parts.slice(2)];
    else if (parts[0] === 'apis' && parts.length >= 4) [group, version, rest] = [parts[1]!, parts[2]!, parts.slice(3)];
    else throw new ApiError('NotFound', `the server could not find the requested resource (${path})`);
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const resource = resourceAt(group, version, rest[0]!);
    if (resource === undefined || rest.length > 3 || (namespace !== undefined && !resource.namespaced)) {
      throw new ApiError('NotFound', `the server could not find the requested resource (${path})`);
    }
    const name = rest[1];
    if (resource.namespaced && name !== undefined && namespace === undefined) throw new ApiError('NotFound', `the server could not find the requested resource (${path}): name a namespace`);
    return { resource, namespace, name, subresource: rest[2] };
  }

  /** Answers the discovery documents; false when `path` is not one. */
  #discovery(path: string, response: ServerResponse): boolean {
    if (path === '/version') {
      sendJson(response, 200, SERVED_VERSION);
      return true;
    }
    if (path === '/openapi/v3') {
      sendJson(response, 200, openApiIndex());
      return true;
    }
    const openApi = /^\/openapi\/v3\/(.+)$/.exec(path);
    if (openApi) {
      const document = openApiDocument(openApi[1]!);
      if (document === undefined) return false;
      sendJson(response, 200, document);
      return true;
    }
    if (path === '/api') {
      sendJson(response, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1' }] });
      return true;
    }
    const groups = apiGroups().map(({ name, version }) => ({
      name,
      versions: [{ groupVersion: `${name}/${version}`, version }],
      preferredVersion: { groupVersion: `${name}/${version}`, version },
    }));
    if (path === '/apis') {
      sendJson(response, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups });
      return true;
    }
    const group = /^\/apis\/([^/]+)$/.exec(path);
    if (group) {
      const found = groups.find((candidate) => candidate.name === group[1]);
      if (found === undefined) return false;
      sendJson(response, 200, { kind: 'APIGroup', apiVersion: 'v1', ...found });
      return true;
    }
    const resources = /^\/api\/(v1)$/.exec(path) ?? /^\/apis\/([^/]+\/[^/]+)$/.exec(path);
    if (resources) {
      const inGroup = API_RESOURCES.filter((resource) => groupVersion(resource) === resources[1]);
      if (inGroup.length === 0) return false;
      sendJson(response, 200, {
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: resources[1],
        resources: [
          ...inGroup.map((resource) => ({
            name: resource.plural,
            singularName: resource.singular,
            namespaced: resource.namespaced,
            kind: resource.kind,
            verbs: resourceVerbs(resource),
            ...(resource.shortNames.length > 0 ? { shortNames: resource.shortNames } : {}),
          })),
          ...(resources[1] === 'v1' ? [{ name: 'pods/log', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get'] }] : []),
          ...inGroup.filter((resource) => resource.statusSubresource).map((resource) => ({ name: `${resource.plural}/status`, singularName: '', namespaced: resource.namespaced, kind: resource.kind, verbs: ['get', 'patch', 'update'] })),
          ...(resources[1] === 'apps/v1' ? [{ name: 'deployments/scale', singularName: '', namespaced: true, group: 'autoscaling', version: 'v1', kind: 'Scale', verbs: ['get', 'patch', 'update'] }] : []),
        ],
      });
      return true;
    }
    return false;
  }
}
