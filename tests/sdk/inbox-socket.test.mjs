// The Inbox's socket with Novu's official browser SDK (@novu/js), as a page
// opens it: a session, then the socket.io connection @novu/js makes once a
// socket event is listened to (`io(socketUrl, {transports: ["websocket"],
// query: {token}})`). Presence follows the connections (SPEC 13): online
// while one is open, offline with lastOnlineAt when the last closes, and
// exactly those two flips in the presence feed. SUBSCRIBERD_URL and
// SUBSCRIBERD_KEY say where and with which API key; tests/sdk.rs starts
// the server and runs this file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { Novu } from "@novu/js";

const apiUrl = process.env.SUBSCRIBERD_URL;
const apiKey = process.env.SUBSCRIBERD_KEY;
assert.ok(apiUrl && apiKey, "SUBSCRIBERD_URL and SUBSCRIBERD_KEY must be set");
// The socket is served on the API's listener, at /socket.io/.
const socketUrl = apiUrl.replace(/^http/, "ws");
const run = Date.now();

const hmac = (subscriberId) => createHmac("sha256", apiKey).update(subscriberId).digest("hex");

async function api(method, path) {
  const response = await fetch(`${apiUrl}${path}`, {
    method,
    headers: { Authorization: `ApiKey ${apiKey}` },
  });
  return { status: response.status, body: await response.json() };
}

async function applicationIdentifier() {
  const me = await api("GET", "/v1/environments/me");
  assert.equal(me.status, 200);
  return me.body.data.identifier;
}

// A page's Inbox client whose socket is connected: resolves once the SDK
// reports the socket's connect (or rejects with its connect error).
async function connected(subscriberId) {
  const novu = new Novu({
    apiUrl,
    socketUrl,
    applicationIdentifier: await applicationIdentifier(),
    subscriber: { subscriberId },
    subscriberHash: hmac(subscriberId),
  });
  const outcome = new Promise((resolve) => novu.on("socket.connect.resolved", resolve));
  // Listening to a socket event is what makes @novu/js connect its socket.
  novu.on("notifications.notification_received", () => {});
  const { error } = await outcome;
  assert.equal(error, undefined, `the socket did not connect: ${error}`);
  return novu;
}

async function subscriber(subscriberId) {
  const reply = await api("GET", `/v1/subscribers/${encodeURIComponent(subscriberId)}`);
  assert.equal(reply.status, 200);
  return reply.body.data;
}

// The subscriber's document once `check` holds (a close reaches the server
// a moment after the client's disconnect), or the last one read after 10 s.
async function eventually(subscriberId, check) {
  const giveUp = Date.now() + 10_000;
  for (;;) {
    const doc = await subscriber(subscriberId);
    if (check(doc) || Date.now() > giveUp) {
      return doc;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function eventsOf(subscriberId) {
  const events = [];
  let after;
  for (;;) {
    const query = after === undefined ? "limit=1000" : `limit=1000&after=${after}`;
    const page = await api("GET", `/v1/presence/events?${query}`);
    assert.equal(page.status, 200);
    events.push(...page.body.data.events);
    if (page.body.data.events.length < 1000) {
      return events.filter((e) => e.subscriberId === subscriberId);
    }
    after = page.body.data.next;
  }
}

test("a connected Inbox socket makes its subscriber online", async () => {
  const subscriberId = `socket-one-${run}`;
  const novu = await connected(subscriberId);
  const doc = await subscriber(subscriberId);
  assert.equal(doc.isOnline, true);
  assert.equal(typeof doc.onlineExpiresAt, "string", "a connection lease runs");
  await novu.socket.disconnect();
  const offline = await eventually(subscriberId, (d) => d.isOnline === false);
  assert.equal(offline.isOnline, false);
});

test("two sockets, one closed: still online; the last closed: offline, and the feed has the two flips", async () => {
  const subscriberId = `socket-two-${run}`;
  const first = await connected(subscriberId);
  const second = await connected(subscriberId);
  assert.equal((await subscriber(subscriberId)).isOnline, true);

  await first.socket.disconnect();
  // Give the close time to arrive; the subscriber must stay online.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const still = await subscriber(subscriberId);
  assert.equal(still.isOnline, true, "one socket is still open");

  const closedAfter = Date.now();
  await second.socket.disconnect();
  const offline = await eventually(subscriberId, (d) => d.isOnline === false);
  assert.equal(offline.isOnline, false);
  const lastOnline = Date.parse(offline.lastOnlineAt);
  assert.ok(lastOnline >= closedAfter - 1000 && lastOnline <= Date.now(), "the close time");
  assert.equal(offline.onlineExpiresAt, undefined);

  const events = await eventsOf(subscriberId);
  assert.deepEqual(
    events.map((e) => [e.isOnline, e.cause]),
    [
      [true, "connected"],
      [false, "disconnected"],
    ],
  );
  assert.equal(events[1].lastOnlineAt, offline.lastOnlineAt);
  assert.equal(events[1].__v, offline.__v);
});
