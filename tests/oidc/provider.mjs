// A real OpenID provider (the certified `oidc-provider` package) for layer-sdk's
// authentication tests, laid out like a Keycloak realm:
//
//   issuer         http://127.0.0.1:<port>/realms/<realm>
//   token          /realms/<realm>/protocol/openid-connect/token
//   introspection  /realms/<realm>/protocol/openid-connect/token/introspect
//   revocation     /realms/<realm>/protocol/openid-connect/revoke
//   jwks           /realms/<realm>/protocol/openid-connect/certs
//   discovery      /.well-known/openid-configuration
//                  (also /realms/<realm>/.well-known/openid-configuration, as in Keycloak)
//
// Clients: OIDC_CLIENT_ID / OIDC_CLIENT_SECRET may use the client_credentials
// grant, with the secret in the form body (client_secret_post), for the scope
// OIDC_SCOPE; OIDC_API_CLIENT_ID / OIDC_API_CLIENT_SECRET stands for the Layer
// API, which may introspect any token. Access tokens are opaque and live
// OIDC_TOKEN_TTL seconds (default 300).
//
// Usage: node provider.mjs [port]    (or OIDC_PORT; none or 0: a free port)
//
// It listens on 127.0.0.1 only. Its standard output is a log of JSON lines
// that the tests read, each written synchronously before the answer it
// describes leaves, so that it is complete whenever a client holds an answer:
//   {"event": "ready", "issuer": ...}                       listening
//   {"event": "token_request", "n": 1, "at": <unix s>}      a POST to the token endpoint arrived
//   {"event": "token_answer", "n": 1, "status": 401, "error": "invalid_client", "client_id": null}
//   {"event": "issued", "token": ..., "iat": ..., "exp": ..., "client_id": ...}
// The issued tokens are in it because it is a test provider: the tests check
// that no token ever shows up in the SDK's logs, and the stand-in API accepts
// a token only until the exp stamped here.

import http from 'node:http';

import Provider from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

const env = process.env;
const host = '127.0.0.1';
const port = Number(process.argv[2] ?? env.OIDC_PORT ?? 0);
const realm = env.OIDC_REALM || 'layer';
const ttl = Number(env.OIDC_TOKEN_TTL || 300);
const clientId = env.OIDC_CLIENT_ID || 'layer-sdk';
const clientSecret = env.OIDC_CLIENT_SECRET || 'layer-sdk-test-secret';
const apiClientId = env.OIDC_API_CLIENT_ID || 'layer-api';
const apiClientSecret = env.OIDC_API_CLIENT_SECRET || 'layer-api-test-secret';
const scope = env.OIDC_SCOPE || 'layer-sdk';

if (!Number.isInteger(ttl) || ttl < 1) {
  console.error(`OIDC_TOKEN_TTL must be a positive whole number of seconds, got ${env.OIDC_TOKEN_TTL}`);
  process.exit(2);
}

const realmPath = `/realms/${realm}`;
const connect = `${realmPath}/protocol/openid-connect`;
const tokenPath = `${connect}/token`;

function log(record) {
  console.log(JSON.stringify(record)); // synchronous for files and pipes on POSIX
}

// The stock in-memory store, which also logs each access token as it is stored,
// with the iat and exp that the token endpoint's answer is made from.
class RecordingAdapter extends MemoryAdapter {
  async upsert(id, payload, expiresIn) {
    if (this.model === 'ClientCredentials') {
      log({
        event: 'issued', token: id, iat: payload.iat, exp: payload.exp, client_id: payload.clientId,
      });
    }
    return super.upsert(id, payload, expiresIn);
  }
}

let tokenRequests = 0;
let handler = null; // the provider's, once the port (and so the issuer) is known

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (path === `${realmPath}/.well-known/openid-configuration`) {
    req.url = '/.well-known/openid-configuration';
  }
  if (path === tokenPath && req.method === 'POST') {
    tokenRequests += 1;
    const answer = { event: 'token_answer', n: tokenRequests, status: null, error: null, client_id: null };
    req.tokenAnswer = answer;
    log({ event: 'token_request', n: tokenRequests, at: Date.now() / 1000 });
    const { writeHead } = res;
    res.writeHead = function logThenWriteHead(status, ...rest) {
      answer.status = status;
      log(answer);
      return writeHead.call(this, status, ...rest);
    };
  }
  if (handler === null) {
    res.writeHead(503).end();
    return;
  }
  handler(req, res);
});

server.listen(port, host, () => {
  const issuer = `http://${host}:${server.address().port}${realmPath}`;
  const provider = new Provider(issuer, {
    adapter: RecordingAdapter,
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_post',
        scope,
      },
      {
        client_id: apiClientId,
        client_secret: apiClientSecret,
        grant_types: [],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    scopes: ['openid', scope],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // The Layer API may introspect any token; any client, its own.
      introspection: {
        enabled: true,
        allowedPolicy: (ctx, client, token) => client.clientId === apiClientId
          || client.clientId === token.clientId,
      },
      revocation: {
        enabled: true,
        allowedPolicy: (ctx, client, token) => client.clientId === token.clientId,
      },
    },
    ttl: { ClientCredentials: ttl },
    routes: {
      authorization: `${connect}/auth`,
      end_session: `${connect}/logout`,
      introspection: `${connect}/token/introspect`,
      jwks: `${connect}/certs`,
      revocation: `${connect}/revoke`,
      token: tokenPath,
      userinfo: `${connect}/userinfo`,
    },
  });
  provider.on('grant.success', (ctx) => {
    if (ctx.req.tokenAnswer) ctx.req.tokenAnswer.client_id = ctx.oidc.client?.clientId ?? null;
  });
  provider.on('grant.error', (ctx, error) => {
    if (ctx.req.tokenAnswer) ctx.req.tokenAnswer.error = error.error ?? String(error);
  });
  handler = provider.callback();
  log({ event: 'ready', issuer });
});

function stop() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
