/**
 * How ambit's control plane tells ambit's agents whether a pod is enrolled in the mesh (Istio's label rule), apart
 * from tunnel_protocol: istiod's tunnel_protocol says "captured now" (from the redirection annotation the node agent
 * sets after capturing), which is what peers need, but the agent needs "should be captured" to capture it in the
 * first place. It rides in Workload.extensions (field 26), which ztunnel ignores: an istiod-compatible resource
 * that still carries what ambit's agent decides by. An agent fed by a control plane without it (istiod) falls back
 * to tunnel_protocol.
 *
 * Owns: the extension's name and encoding (an Any holding a google.protobuf.BoolValue).
 * Must not know about: the rule itself (shared/k8s/enrollment.ts), the mesh state.
 */
import { messageType } from './protos.ts';

export const ENROLLMENT_EXTENSION_NAME = 'ambit.io/enrollment';
const BOOL_VALUE_TYPE_URL = 'type.googleapis.com/google.protobuf.BoolValue';

/**
 * google.protobuf.Any as protobufjs holds it: its bundled definition keeps the proto field name `type_url` (not
 * camelCased like ambit's own messages).
 */
interface AnyMessage {
  type_url?: string;
  typeUrl?: string;
  value: Uint8Array;
}

export interface ExtensionMessage {
  name: string;
  config: AnyMessage;
}

/** The extension to put in a Workload's `extensions`. */
export function enrollmentExtension(enrolled: boolean): ExtensionMessage {
  return { name: ENROLLMENT_EXTENSION_NAME, config: { type_url: BOOL_VALUE_TYPE_URL, value: messageType('google.protobuf.BoolValue').encode({ value: enrolled }).finish() } };
}

/** The enrollment a decoded Workload's extensions carry; undefined when absent (or not understood). */
export function enrollmentFromExtensions(extensions: readonly { name: string; config?: AnyMessage | null }[] | undefined): boolean | undefined {
  for (const extension of extensions ?? []) {
    const typeUrl = extension.config?.type_url ?? extension.config?.typeUrl;
    if (extension.name !== ENROLLMENT_EXTENSION_NAME || !extension.config || typeUrl !== BOOL_VALUE_TYPE_URL) continue;
    try {
      return (messageType('google.protobuf.BoolValue').decode(extension.config.value) as unknown as { value: boolean }).value === true;
    } catch {
      return undefined;
    }
  }
  return undefined;
}
