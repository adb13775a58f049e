/**
 * The control plane's writes to the Kubernetes API server: objects it owns (a waypoint's ServiceAccount, Service and
 * Deployment) created or merged into place, and the status of objects users own (Gateway, HTTPRoute, GRPCRoute)
 * through their `status` subresource. Reads go through the informers (controlplane/sources/kubernetes.ts).
 *
 * Owns: the paths of the kinds it writes, create-or-merge (POST; 409 AlreadyExists -> JSON merge patch of the
 * object's own fields, so what the API server added, a Service's clusterIP, stays), status patches, and errors that
 * say which object and what the server answered (a 403 names the RBAC rule that is missing).
 * Must not know about: what the objects mean (controlplane/waypoint-controller.ts, route-status-writer.ts).
 */
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import type { K8sObject } from '../shared/k8s/objects.ts';

/** A write the API server did not answer in time is retried by the next reconcile. */
export const KUBE_WRITE_TIMEOUT_MS = 10_000;

const RESOURCES: Record<string, { prefix: string; plural: string }> = {
  ServiceAccount: { prefix: '/api/v1', plural: 'serviceaccounts' },
  Service: { prefix: '/api/v1', plural: 'services' },
  Deployment: { prefix: '/apis/apps/v1', plural: 'deployments' },
  Gateway: { prefix: '/apis/gateway.networking.k8s.io/v1', plural: 'gateways' },
  HTTPRoute: { prefix: '/apis/gateway.networking.k8s.io/v1', plural: 'httproutes' },
  GRPCRoute: { prefix: '/apis/gateway.networking.k8s.io/v1', plural: 'grpcroutes' },
};

export class KubeWriteError extends Error {
  readonly code = 'AMBIT_KUBE_WRITE';
  readonly status: number;
  constructor(message: string, status: number, options?: ErrorOptions) {
    super(message, options);
    this.name = 'KubeWriteError';
    this.status = status;
  }
}

/** The seam the controllers write through (tests may record instead). */
export interface KubeWriter {
  /** Creates `object`, or merges its fields into the existing one; resolves with the stored object. */
  ensure(object: K8sObject): Promise<K8sObject>;
  /** Replaces `.status` of `kind` `namespace/name` (merge patch of the status subresource). */
  patchStatus(kind: string, namespace: string, name: string, status: unknown): Promise<void>;
}

export function collectionPath(kind: string, namespace: string): string {
  const resource = RESOURCES[kind];
  if (!resource) throw new Error(`the control plane does not write ${kind}`);
  return `${resource.prefix}/namespaces/${encodeURIComponent(namespace)}/${resource.plural}`;
}

interface Answer {
  status: number;
  body: unknown;
}

function message(body: unknown): string {
  return body !== null && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string' ? (body as { message: string }).message : String(body).slice(0, 200);
}

export class ApiServerWriter implements KubeWriter {
  readonly #kubeConfig: KubeConfig;

  constructor(kubeConfig: KubeConfig) {
    this.#kubeConfig = kubeConfig;
  }

  async ensure(object: K8sObject): Promise<K8sObject> {
    const kind = object.kind ?? '';
    const namespace = object.metadata?.namespace ?? 'default';
    const name = object.metadata?.name ?? '';
    const collection = collectionPath(kind, namespace);
    const created = await this.#request('POST', collection, object, 'application/json');
    if (created.status === 201 || created.status === 200) return created.body as K8sObject;
    if (created.status !== 409) throw this.#error('create', kind, namespace, name, created);
    const patched = await this.#request('PATCH', `${collection}/${encodeURIComponent(name)}`, object, 'application/merge-patch+json');
    if (patched.status === 200) return patched.body as K8sObject;
    throw this.#error('update', kind, namespace, name, patched);
  }

  async patchStatus(kind: string, namespace: string, name: string, status: unknown): Promise<void> {
    const answer = await this.#request('PATCH', `${collectionPath(kind, namespace)}/${encodeURIComponent(name)}/status`, { status }, 'application/merge-patch+json');
    if (answer.status !== 200) throw this.#error('write the status of', kind, namespace, name, answer);
  }

  #error(verb: string, kind: string, namespace: string, name: string, answer: Answer): KubeWriteError {
    const rbac = answer.status === 403 ? ` (the control plane's ClusterRole needs this verb on ${RESOURCES[kind]?.plural ?? kind}${verb.includes('status') ? '/status' : ''})` : '';
    return new KubeWriteError(`cannot ${verb} ${kind} ${namespace}/${name}: the API server answered ${answer.status}: ${message(answer.body)}${rbac}`, answer.status);
  }

  async #request(method: 'POST' | 'PATCH', path: string, body: unknown, contentType: string): Promise<Answer> {
    const cluster = this.#kubeConfig.getCurrentCluster();
    if (!cluster) throw new KubeWriteError('the kubeconfig has no current cluster', 0);
    const url = new URL(`${cluster.server}${path}`);
    const payload = Buffer.from(JSON.stringify(body));
    const options: https.RequestOptions = { method, headers: { accept: 'application/json', 'content-type': contentType, 'content-length': payload.length }, timeout: KUBE_WRITE_TIMEOUT_MS };
    await this.#kubeConfig.applyToHTTPSOptions(options);
    return new Promise((resolve, reject) => {
      const request = https.request(url, options, (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', reject);
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // kept as text for the message
          }
          resolve({ status: response.statusCode ?? 0, body: parsed });
        });
      });
      request.on('timeout', () => request.destroy(new KubeWriteError(`${method} ${path}: no answer within ${KUBE_WRITE_TIMEOUT_MS} ms`, 0)));
      request.on('error', (error) => reject(error instanceof KubeWriteError ? error : new KubeWriteError(`${method} ${path}: ${error.message}`, 0, { cause: error })));
      request.end(payload);
    });
  }
}
