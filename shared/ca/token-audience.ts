/**
 * The audience of the service account tokens node agents present to the control plane (xDS and CA), as Istio's:
 * ztunnel's projected token is for `istio-ca`, and istiod's TokenReview asks for it (TOKEN_AUDIENCES). A module of
 * its own so the manifests generator and the runtime use it without loading gRPC.
 *
 * Owns: the constant. Must not know about: anything else.
 */
export const CONTROL_PLANE_TOKEN_AUDIENCE = 'istio-ca';
