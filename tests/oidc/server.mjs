// A real OAuth 2.0 / OpenID Connect server for the generic provider tests: oidc-provider (pinned in
// package.json, installed by tests/src/oidc.rs into .tools/oidc) with one confidential client,
// PKCE required, refresh-token rotation, token revocation (RFC 7009), and an interaction that signs
// in a fixed account and consents to what was asked, so a test needs no browser, only a client that
// keeps cookies.
//
// Environment: OIDC_MODULES (the node_modules folder), OIDC_PORT, OIDC_CLIENT_ID,
// OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI; optionally OIDC_ACCESS_TOKEN_TTL (seconds, default 600).
//
// GET /test/grants answers what the server did, from its own events: refresh grants issued and grants
// revoked (reuse detection revokes the whole grant), so a test counts refreshes at the provider.

import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`server.mjs: ${name} is not set`);
    process.exit(2);
  }
  return value;
};

const modules = env('OIDC_MODULES');
const port = Number(env('OIDC_PORT'));
// The package is ESM only and installed outside this folder, so it is imported by path.
const { default: Provider } = await import(pathToFileURL(join(modules, 'oidc-provider', 'lib', 'index.js')).href);

const ACCOUNT = 'test-user';
// Who the interaction signs in; GET /test/sign-in-as/{account} changes it for the logins after it.
let signInAs = ACCOUNT;
const accessTokenTtl = Number(process.env.OIDC_ACCESS_TOKEN_TTL || 600);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: env('OIDC_CLIENT_ID'),
      client_secret: env('OIDC_CLIENT_SECRET'),
      redirect_uris: [env('OIDC_REDIRECT_URI')],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  pkce: { required: () => true },
  // Every refresh spends the presented token; presenting a spent one revokes the grant.
  rotateRefreshToken: true,
  // RFC 7009 revocation, so a disconnect can end the grant at the provider.
  features: { devInteractions: { enabled: false }, revocation: { enabled: true } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  claims: { openid: ['sub'], profile: ['name'], email: ['email'] },
  findAccount: async (_ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, name: 'Test User', email: 'test.user@example.com' }),
  }),
  cookies: { keys: ['broker-tests-cookie-key'] },
  ttl: { AccessToken: accessTokenTtl, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 86400, RefreshToken: 86400 },
});

const seen = { refreshes: 0, codes: 0, revoked: 0, errors: 0 };
provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  if (type === 'refresh_token') seen.refreshes += 1;
  if (type === 'authorization_code') seen.codes += 1;
});
provider.on('grant.revoked', () => { seen.revoked += 1; });
provider.on('grant.error', () => { seen.errors += 1; });
provider.use(async (ctx, next) => {
  if (ctx.path.startsWith('/test/sign-in-as/')) {
    signInAs = decodeURIComponent(ctx.path.slice('/test/sign-in-as/'.length));
    ctx.body = { signInAs };
    return undefined;
  }
  if (ctx.path === '/test/instance') {
    ctx.type = 'text/plain';
    ctx.body = process.env.OIDC_INSTANCE || '';
    return undefined;
  }
  if (ctx.path !== '/test/grants') return next();
  ctx.body = seen;
  return undefined;
});

// The interaction: sign in ACCOUNT, grant what is missing, and send the browser back to the provider.
provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/interaction/')) {
    return next();
  }
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params } = details;
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: signInAs } };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: signInAs, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    ctx.status = 400;
    ctx.body = `unexpected prompt ${prompt.name}`;
    return undefined;
  }
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  ctx.status = 303;
  ctx.redirect(returnTo);
  return undefined;
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider ${issuer} ready`);
});

process.on('SIGTERM', () => process.exit(0));
