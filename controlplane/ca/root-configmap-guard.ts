/**
 * Kubernetes mode: keeps ConfigMap `istio-ca-root-cert` as published in every namespace, as istiod's namespace
 * controller does. A watch on ConfigMaps of that name only (a fieldSelector): one deleted while its namespace exists,
 * or edited away from the root, is written again. The agents' DaemonSet mounts it, so a deleted one would keep new
 * agents from starting.
 *
 * Owns: that watch, its restarts, and deciding when to write again. Loaded only in Kubernetes mode (client-node).
 * Must not know about: how the ConfigMap is written (root-publisher.ts), the root's key.
 */
import { ListWatch, Watch, type CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import { ROOT_CONFIGMAP_KEY, ROOT_CONFIGMAP_NAME } from './config.ts';
import { publishRootConfigMap } from './root-publisher.ts';

/** First delay before restarting a failed ConfigMap watch; doubled per failure, at most the maximum. */
const RESTART_INITIAL_MS = 1_000;
const RESTART_MAX_MS = 30_000;

export interface RootConfigMapGuard {
  stop(): void;
}

/**
 * Watches the `istio-ca-root-cert` ConfigMaps (only those: a fieldSelector on the name) and writes one again when it
 * is deleted while its namespace still exists (`namespaceExists`), or edited away from the root. Problems (the
 * write failed, the watch broke) go to `onProblem`; the watch restarts itself.
 */
export function guardRootConfigMaps(options: {
  kubeConfig: KubeConfig;
  core: CoreV1Api;
  rootCertPem: string;
  namespaceExists: (namespace: string) => boolean;
  onRestored?: (namespace: string, why: 'deleted' | 'edited') => void;
  onProblem?: (message: string) => void;
}): RootConfigMapGuard {
  const fieldSelector = `metadata.name=${ROOT_CONFIGMAP_NAME}`;
  const informer = new ListWatch<V1ConfigMap>(
    '/api/v1/configmaps',
    new Watch(options.kubeConfig),
    () => options.core.listConfigMapForAllNamespaces({ fieldSelector }),
    false,
    undefined,
    fieldSelector,
  );
  let stopped = false;
  let backoffMs = RESTART_INITIAL_MS;
  let timer: NodeJS.Timeout | undefined;
  const restore = (namespace: string | undefined, why: 'deleted' | 'edited'): void => {
    if (stopped || !namespace || !options.namespaceExists(namespace)) return;
    publishRootConfigMap(options.core, namespace, options.rootCertPem).then(
      (written) => written && options.onRestored?.(namespace, why),
      (error: Error) => options.onProblem?.(`cannot write ${ROOT_CONFIGMAP_NAME} in ${namespace} again: ${error.message}`),
    );
  };
  const check = (configMap: V1ConfigMap): void => {
    if (configMap.data?.[ROOT_CONFIGMAP_KEY] !== options.rootCertPem) restore(configMap.metadata?.namespace, 'edited');
  };
  informer.on('add', check);
  informer.on('update', check);
  informer.on('delete', (configMap) => restore(configMap.metadata?.namespace, 'deleted'));
  informer.on('connect', () => {
    backoffMs = RESTART_INITIAL_MS;
  });
  const start = (): void => {
    informer.start().catch((error: unknown) => restartLater(error));
  };
  const restartLater = (error: unknown): void => {
    if (stopped) return;
    options.onProblem?.(`watching ${ROOT_CONFIGMAP_NAME} ConfigMaps failed: ${(error as Error)?.message ?? String(error)}; retrying in ${backoffMs} ms`);
    clearTimeout(timer);
    timer = setTimeout(start, backoffMs);
    backoffMs = Math.min(backoffMs * 2, RESTART_MAX_MS);
  };
  informer.on('error', restartLater);
  start();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      void informer.stop();
    },
  };
}
