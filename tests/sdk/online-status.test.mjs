// Drives a running subscriberd with Novu's official SDK (@novu/api).
// SUBSCRIBERD_URL and SUBSCRIBERD_KEY say where and with which key; the Rust
// test tests/sdk.rs starts the server and runs this file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Novu } from "@novu/api";

const serverURL = process.env.SUBSCRIBERD_URL;
const secretKey = process.env.SUBSCRIBERD_KEY;
assert.ok(serverURL && secretKey, "SUBSCRIBERD_URL and SUBSCRIBERD_KEY must be set");

const novu = new Novu({ serverURL, secretKey, retryConfig: { strategy: "none" } });
const subscriberId = `sdk-user-${Date.now()}`;

test("create, presence online and offline, retrieve", async () => {
  const created = await novu.subscribers.create({
    subscriberId,
    firstName: "Ada",
    email: "ada@example.com",
    data: { plan: "pro", seats: 3 },
  });
  assert.equal(created.result.subscriberId, subscriberId);
  assert.equal(created.result.firstName, "Ada");
  assert.equal(created.result.deleted, false);
  assert.deepEqual(created.result.data, { plan: "pro", seats: 3 });

  const online = await novu.subscribers.properties.updateOnlineFlag({ isOnline: true }, subscriberId);
  assert.equal(online.result.isOnline, true);
  assert.equal(online.result.subscriberId, subscriberId);

  const offline = await novu.subscribers.properties.updateOnlineFlag({ isOnline: false }, subscriberId);
  assert.equal(offline.result.isOnline, false);
  assert.ok(offline.result.lastOnlineAt, "going offline stamps lastOnlineAt");
  assert.ok(!Number.isNaN(Date.parse(offline.result.lastOnlineAt)));

  const retrieved = await novu.subscribers.retrieve(subscriberId);
  assert.equal(retrieved.result.isOnline, false);
  assert.equal(retrieved.result.lastOnlineAt, offline.result.lastOnlineAt);
  assert.equal(retrieved.result.id ?? retrieved.result._id, offline.result.id ?? offline.result._id);
});

test("documents with a running presence lease parse", async () => {
  // tests/sdk.rs runs the server with --presence-ttl-secs, so every online
  // document carries onlineExpiresAt (SPEC section 10).
  const id = `${subscriberId}-lease`;
  await novu.subscribers.create({ subscriberId: id });
  const online = await novu.subscribers.properties.updateOnlineFlag({ isOnline: true }, id);
  assert.equal(online.result.isOnline, true);
  const raw = await fetch(`${serverURL}/v1/subscribers/${encodeURIComponent(id)}`, {
    headers: { Authorization: `ApiKey ${secretKey}` },
  });
  const body = await raw.json();
  assert.ok(!Number.isNaN(Date.parse(body.data.onlineExpiresAt)), JSON.stringify(body));
  const retrieved = await novu.subscribers.retrieve(id);
  assert.equal(retrieved.result.isOnline, true);
  assert.equal(retrieved.result.subscriberId, id);
});

test("a missing subscriber is a typed 404", async () => {
  await assert.rejects(
    novu.subscribers.properties.updateOnlineFlag({ isOnline: true }, `missing-${subscriberId}`),
    (err) => {
      assert.equal(err.statusCode, 404, String(err));
      assert.equal(err.data$?.message ?? JSON.parse(err.body).message, "Subscriber not found");
      return true;
    },
  );
  await assert.rejects(novu.subscribers.retrieve(`missing-${subscriberId}`), (err) => err.statusCode === 404);
});

test("a wrong key is a typed 401", async () => {
  const stranger = new Novu({ serverURL, secretKey: "not-a-real-key", retryConfig: { strategy: "none" } });
  await assert.rejects(stranger.subscribers.retrieve(subscriberId), (err) => {
    assert.equal(err.statusCode, 401, String(err));
    assert.match(err.body, /API Key not found/);
    return true;
  });
});

test("a bad body is a typed 422", async () => {
  await assert.rejects(
    novu.subscribers.properties.updateOnlineFlag({ isOnline: "yes" }, subscriberId),
    (err) => {
      // The SDK may refuse the input itself before sending; either way it is typed.
      assert.ok(err.statusCode === 422 || err.name === "SDKValidationError", String(err));
      return true;
    },
  );
});

test("delete, then 404", async () => {
  const deleted = await novu.subscribers.delete(subscriberId);
  assert.equal(deleted.result.acknowledged, true);
  assert.equal(deleted.result.status, "deleted");
  await assert.rejects(novu.subscribers.retrieve(subscriberId), (err) => err.statusCode === 404);
});
