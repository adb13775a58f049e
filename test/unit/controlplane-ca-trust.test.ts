import test from 'ava';
import { Metadata } from '@grpc/grpc-js';
import { parseConfig, tokenReviewNodeAuthenticator } from '../../controlplane/main.ts';

const metadata = new Metadata();

test('in Kubernetes mode the CA serves only trusted node agents, not any pod whose token names a node', async (t) => {
  const config = parseConfig(['--source', 'kubernetes'], {});
  t.deepEqual(config.trustedNodeAgents, ['system:serviceaccount:istio-system:ambit-agent']);
  const workloadToken = tokenReviewNodeAuthenticator({ authenticate: async () => ({ identity: 'system:serviceaccount:shop:cart', node: 'node-1' }) }, config.trustedNodeAgents);
  await t.throwsAsync(Promise.resolve(workloadToken(metadata)), { message: /system:serviceaccount:shop:cart is not a node agent/ });
  const agentToken = tokenReviewNodeAuthenticator({ authenticate: async () => ({ identity: 'system:serviceaccount:istio-system:ambit-agent', node: 'node-1' }) }, config.trustedNodeAgents);
  t.deepEqual(await agentToken(metadata), { node: 'node-1' });
});

test('the trusted node agents can be set, as Istio CA_TRUSTED_NODE_ACCOUNTS', (t) => {
  t.deepEqual(parseConfig(['--source', 'kubernetes', '--trusted-node-agents', 'system:serviceaccount:a:b, system:serviceaccount:c:d'], {}).trustedNodeAgents, ['system:serviceaccount:a:b', 'system:serviceaccount:c:d']);
  t.deepEqual(parseConfig(['--source', 'kubernetes'], { CA_TRUSTED_NODE_ACCOUNTS: 'system:serviceaccount:x:y' }).trustedNodeAgents, ['system:serviceaccount:x:y']);
});
