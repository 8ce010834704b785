// Opens Inbox sessions on a running subscriberd with Novu's official
// browser SDK (@novu/js), as a page would: `new Novu({...})` posts
// /v1/inbox/session at once and reports the outcome on the
// "session.initialize.resolved" event. SUBSCRIBERD_URL and SUBSCRIBERD_KEY
// say where and with which API key; tests/sdk.rs starts the server and runs
// this file.
//
// The socket is left alone: @novu/js connects it only when a socket event
// (notifications.notification_received, ...) is listened to, and no test
// here listens to one; inbox-socket.test.mjs does.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { Novu } from "@novu/js";

const apiUrl = process.env.SUBSCRIBERD_URL;
const apiKey = process.env.SUBSCRIBERD_KEY;
assert.ok(apiUrl && apiKey, "SUBSCRIBERD_URL and SUBSCRIBERD_KEY must be set");
// Never Novu's cloud: the socket URL points at the server under test too.
const socketUrl = apiUrl.replace(/^http/, "ws");
const run = Date.now();

// What the customer's backend computes for its page (Novu's docs).
const hmac = (subscriberId, key = apiKey) =>
  createHmac("sha256", key).update(subscriberId).digest("hex");

async function api(method, path) {
  const response = await fetch(`${apiUrl}${path}`, {
    method,
    headers: { Authorization: `ApiKey ${apiKey}` },
  });
  return { status: response.status, body: await response.json() };
}

// The environment's application identifier, as a dashboard shows it.
async function applicationIdentifier() {
  const me = await api("GET", "/v1/environments/me");
  assert.equal(me.status, 200);
  return me.body.data.identifier;
}

// A client as the Inbox makes one, and the outcome of its session.
function open(options) {
  const novu = new Novu({ apiUrl, socketUrl, ...options });
  return new Promise((resolve) => {
    novu.on("session.initialize.resolved", (outcome) => resolve({ novu, ...outcome }));
  });
}

test("a session with the subscriber's HMAC creates the subscriber", async () => {
  const applicationId = await applicationIdentifier();
  const subscriberId = `js-user-${run}`;
  const { data, error } = await open({
    applicationIdentifier: applicationId,
    subscriber: { subscriberId, firstName: "Ada", email: "ada@example.com" },
    subscriberHash: hmac(subscriberId),
  });
  assert.equal(error, undefined, `the session failed: ${error}`);
  assert.equal(typeof data.token, "string");
  assert.equal(data.token.split(".").length, 3, "a JWT");
  assert.equal(data.totalUnreadCount, 0);
  assert.equal(data.removeNovuBranding, false);
  assert.equal(data.isDevelopmentMode, true);
  assert.equal(data.applicationIdentifier, applicationId);

  const created = await api("GET", `/v1/subscribers/${subscriberId}`);
  assert.equal(created.status, 200);
  assert.equal(created.body.data.firstName, "Ada");
  assert.equal(created.body.data.email, "ada@example.com");
});

test("the older subscriberId option opens a session too", async () => {
  const subscriberId = `js-older-${run}`;
  const { data, error } = await open({
    applicationIdentifier: await applicationIdentifier(),
    subscriberId,
    subscriberHash: hmac(subscriberId),
  });
  assert.equal(error, undefined, `the session failed: ${error}`);
  assert.equal(typeof data.token, "string");
  assert.equal((await api("GET", `/v1/subscribers/${subscriberId}`)).status, 200);
});

test("a wrong hash is refused and creates nothing", async () => {
  const subscriberId = `js-forged-${run}`;
  const { data, error } = await open({
    applicationIdentifier: await applicationIdentifier(),
    subscriber: { subscriberId },
    subscriberHash: hmac(subscriberId, "not-the-api-key"),
  });
  assert.equal(data, undefined);
  assert.equal(error.status, 400);
  assert.equal(error.body.message, "Please provide a valid HMAC hash");
  assert.equal((await api("GET", `/v1/subscribers/${subscriberId}`)).status, 404);
});

test("an unknown application identifier is refused", async () => {
  const subscriberId = `js-nowhere-${run}`;
  const { error } = await open({
    applicationIdentifier: "no-such-app",
    subscriber: { subscriberId },
    subscriberHash: hmac(subscriberId),
  });
  assert.equal(error.status, 400);
  assert.equal(error.body.message, "Please provide a valid app identifier");
  assert.equal((await api("GET", `/v1/subscribers/${subscriberId}`)).status, 404);
});
