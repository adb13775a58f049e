/**
 * The OpenAPI v3 documents kubectl reads before a write, in the least form that answers its one question: which
 * kinds accept the `fieldValidation` query parameter (all served kinds do: admission.ts checks the fields ambit
 * knows). No schemas: kubectl then computes patches from its built-in types, or as JSON merge patches for the
 * mesh's custom kinds, which the server applies the same way.
 *
 * Owns: `/openapi/v3` and `/openapi/v3/<group version path>`. Must not know about: objects or storage.
 */
import { API_RESOURCES, collectionPath, groupVersion, type ApiResource } from './resources.ts';

function documentPath(resource: ApiResource): string {
  return resource.group === '' ? `api/${resource.version}` : `apis/${resource.group}/${resource.version}`;
}

/** The index: one entry per group version (`api/v1`, `apis/apps/v1`, ...). */
export function openApiIndex(): Record<string, unknown> {
  const paths: Record<string, { serverRelativeURL: string }> = {};
  for (const resource of API_RESOURCES) paths[documentPath(resource)] = { serverRelativeURL: `/openapi/v3/${documentPath(resource)}?hash=ambit-local-1` };
  return { paths };
}

/** The document of one group version (`api/v1`, `apis/<group>/<version>`), undefined when none is served there. */
export function openApiDocument(path: string): Record<string, unknown> | undefined {
  const resources = API_RESOURCES.filter((resource) => documentPath(resource) === path);
  if (resources.length === 0) return undefined;
  const paths: Record<string, unknown> = {};
  for (const resource of resources) {
    const item = `${collectionPath(resource, resource.namespaced ? '{namespace}' : undefined)}/{name}`;
    paths[item] = {
      patch: {
        'x-kubernetes-group-version-kind': { group: resource.group, version: resource.version, kind: resource.kind },
        parameters: [{ name: 'fieldValidation', in: 'query', schema: { type: 'string', uniqueItems: true } }],
        responses: { '200': { description: 'OK' } },
      },
    };
  }
  return { openapi: '3.0.0', info: { title: 'ambit local cluster', version: groupVersion(resources[0]!) }, paths, components: { schemas: {} } };
}
