// Verifies an esprit-edge identity assertion the way a Node upstream (Sim, a
// Next.js app) would: with the `jose` package, against the JWKS it fetches
// from the edge, checking issuer, audience and expiry. Used by
// tests/it/identity.rs.
//
// Usage: node verify-assertion.js JWKS_URL TOKEN AUDIENCE ISSUER
// Prints one JSON line: {"ok": claims} for the token as it is, then the
// outcomes of three checks that must fail: another audience, a clock past
// its expiry, and the token with its signature's last byte changed.
const { createRemoteJWKSet, jwtVerify } = require("jose");

async function outcome(token, jwks, opts) {
  try {
    const { payload } = await jwtVerify(token, jwks, opts);
    return { ok: payload };
  } catch (e) {
    return { err: e.code || String(e) };
  }
}

async function main() {
  const [jwksUrl, token, audience, issuer] = process.argv.slice(2);
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  const good = await outcome(token, jwks, { audience, issuer, algorithms: ["EdDSA"] });
  const wrongAudience = await outcome(token, jwks, { audience: audience + "-other", issuer });
  const exp = good.ok ? good.ok.exp : 0;
  const expired = await outcome(token, jwks, {
    audience,
    issuer,
    currentDate: new Date((exp + 1) * 1000),
  });
  const last = token.slice(-1);
  const forged = token.slice(0, -2) + (token.slice(-2, -1) === "A" ? "B" : "A") + last;
  const tampered = await outcome(forged, jwks, { audience, issuer });
  console.log(JSON.stringify({ good, wrongAudience, expired, tampered }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
